"""The request-body cap (`MODELPRESS_MAX_BODY_BYTES`), enforced before anything parses a body.

A pure ASGI middleware, so that it sees the body as it streams in: a declared Content-Length
over the cap is refused before a byte is read, and a chunked body is counted as it arrives and
refused at cap + 1 byte; FastAPI never buffers more than the cap of a JSON body. The multipart
upload routes are exempt: their own streaming parser (app/core/uploads.py) counts the whole
body against `MODELPRESS_MAX_UPLOAD_BYTES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, BadRequest, PayloadTooLarge
from app.http.problems import PROBLEM_JSON


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body exceeds the limit of {limit} bytes (MODELPRESS_MAX_BODY_BYTES).",
        limit=limit,
    )


async def _send_problem(send: Send, error: AppError, path: str) -> None:
    body = json.dumps(error.to_problem(path)).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse a request body over `limit()` bytes with a 413 problem (400 for a bad length).

    `upload_paths`: the routes whose multipart/form-data bodies their own parser bounds.
    """

    def __init__(
        self, app: ASGIApp, *, limit: Callable[[], int], upload_paths: Collection[str] = ()
    ) -> None:
        self.app, self.limit, self.upload_paths = app, limit, frozenset(upload_paths)

    def _exempt(self, scope: Scope) -> bool:
        content_type = (_header(scope, b"content-type") or "").lower()
        return scope["path"] in self.upload_paths and content_type.startswith("multipart/form-data")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        limit, path = self.limit(), scope["path"]
        declared = _header(scope, b"content-length")
        if declared is not None and not (declared.isascii() and declared.strip().isdigit()):
            await _send_problem(
                send, BadRequest("Invalid Content-Length.", code="invalid_content_length"), path
            )
            return
        if declared is not None and int(declared) > limit:
            await _send_problem(send, _too_large(limit), path)
            return
        await _Counted(self.app, limit, path)(scope, receive, send)


class _Counted:
    """One request whose body is counted as the app reads it (chunked bodies, lying lengths)."""

    def __init__(self, app: ASGIApp, limit: int, path: str) -> None:
        self.app, self.limit, self.path = app, limit, path
        self.received = 0
        self.started = False  # the app has begun its answer
        self.cut = False  # the body went over the limit: the app reads no further
        self.refused = False  # and we answered 413 in the app's place

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            if self.cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    # Answer now and tell the app the client went away.
                    self.cut = True
                    if not self.started:
                        self.refused = True
                        await _send_problem(send, _too_large(self.limit), self.path)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused:
                return  # the 413 is the answer; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
