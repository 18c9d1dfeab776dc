"""One HTTP POST of a webhook to a vetted, pinned address (httpx).

The connection goes to `Target.address`, the address `address.resolve` just checked: the URL
carries the IP, the `Host` header and the TLS SNI (and certificate check) carry the name. No
proxy from the environment, no redirects, short timeouts, at most a few KB of the answer read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from app.webhooks.address import Target

MAX_RESPONSE_BYTES = 4096


@dataclass(frozen=True)
class Attempt:
    """What one POST got: a status code, or an error (both when the status was not 2xx)."""

    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> Attempt:
    """POST `body` to `target`; never raises for network trouble (it is the attempt's error)."""
    extensions: dict[str, object] = {}
    if target.scheme == "https" and target.host != str(target.address):
        extensions["sni_hostname"] = target.host
    deadline = time.monotonic() + 2 * timeout
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(
                "POST",
                target.pinned_url,
                content=body,
                headers={**headers, "Host": target.host_header},
                extensions=extensions,
            )
            response = client.send(request, stream=True)
            try:
                _drain(response, deadline)
                code = response.status_code
            finally:
                response.close()
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= code < 300:
        return Attempt(code, None)
    if 300 <= code < 400:
        return Attempt(code, f"HTTP {code} (redirects are not followed)")
    return Attempt(code, f"HTTP {code}")


def _drain(response: httpx.Response, deadline: float) -> None:
    """Read at most MAX_RESPONSE_BYTES of the (undecoded) answer, then stop."""
    read = 0
    for chunk in response.iter_raw(1024):
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
            break
