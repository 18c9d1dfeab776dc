"""`modelpress_http_request_duration_seconds{route,status}`: a pure ASGI middleware.

It passes every message through as it comes (a streamed download or an event stream is never
buffered), notes the status of `http.response.start`, and observes the time from the request's
arrival to the end of the response, or of the connection when the client leaves first. `route`
is the route template the router matched (`/v1/jobs/{job_id}`), never the raw path, so the
label's values stay few; a request the router did not label (refused before routing, e.g. a
body over the limit, or a static file under a mount: `/static/docs/{path}`) is matched against
the routes here, and one that matches none is `unmatched`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import observe_request

UNMATCHED = "unmatched"


def _template(route: object) -> str | None:
    if isinstance(route, Mount):  # static files: the mount, not the file
        return route.path.rstrip("/") + "/{path}"
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _candidates(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes in order, those of included routers inlined (FastAPI keeps them as one
    route per `include_router`)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _candidates(inner.routes)
        else:
            yield route


def route_label(scope: Scope, arrival: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served this request (`scope`, as the router left it), or
    of the one that would have (`arrival`: the scope as it came, before a mount rewrote its
    root path)."""
    served = _template(scope.get("route"))
    if served:
        return served
    partial = None
    for route in _candidates(routes):
        match, _child = route.matches(arrival)
        if match == Match.FULL:
            return _template(route) or UNMATCHED
        if match == Match.PARTIAL and partial is None:
            partial = route
    return (_template(partial) if partial is not None else None) or UNMATCHED


class RequestMetricsMiddleware:
    """Observe each HTTP request's duration by route template and status."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, arrival = time.perf_counter(), dict(scope)
        status = 500  # what the server answers when the app fails before it responds

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = route_label(scope, arrival, self.routes())
            observe_request(route, status, time.perf_counter() - started)
