"""Retries with backoff: connection errors, 429 and 503 (honouring `Retry-After`), bounded.

What is retried depends on whether repeating the request is safe:
- `idempotent` (GET, DELETE, cancel, a job submit carrying an `Idempotency-Key`): any transport
  error (connect, read, write, timeouts, a dropped connection) and 429/503.
- `unsafe` (an upload, a submit without a key): only when the server provably did nothing with
  it: the connection was never made (`httpx.ConnectError`/`ConnectTimeout`: not one byte sent),
  or it answered 429/503 (refused before acting: the rate limit answers before the body is read).
  A read error or timeout after the body went out is raised, never retried: the model may exist.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})
NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; waits `backoff`, doubling up to `max_backoff` (with jitter), or
    what `Retry-After` says. A `Retry-After` above `max_retry_after` is not waited for: the
    answer is raised at once (a limit that lifts in an hour is the caller's decision)."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def backoff_for(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (1-based), jittered to 50-100%."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


NO_RETRY = RetryPolicy(attempts=1)


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: a number of seconds or an HTTP date; None when absent or bad."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def send(
    http: httpx.Client,
    build: Callable[[], httpx.Request],
    *,
    policy: RetryPolicy,
    idempotent: bool,
    stream: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Send `build()` (a fresh request each try: a streamed body is single-use) and retry what
    `policy` and `idempotent` allow; the last answer or error is returned or raised."""
    retryable: tuple[type[Exception], ...] = (httpx.TransportError,) if idempotent else NOTHING_SENT
    for attempt in range(1, policy.attempts + 1):
        last = attempt == policy.attempts
        try:
            response = http.send(build(), stream=stream)
        except retryable:
            if last:
                raise
            sleep(policy.backoff_for(attempt))
            continue
        if response.status_code not in policy.statuses or last:
            return response
        wait = retry_after(response)
        if wait is not None and wait > policy.max_retry_after:
            return response
        response.close()
        sleep(policy.backoff_for(attempt) if wait is None else wait)
    raise AssertionError("unreachable: the last attempt returns or raises")
