"""`modelpress_http_request_duration_seconds` and `modelpress_upload_bytes_total` through the app,
and the request middleware's streaming (it must never buffer a response)."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from prom import samples, scrape, value
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.core import metrics as names
from app.http.metrics import RequestMetricsMiddleware

HTTP = names.HTTP_DURATION
UPLOADS = "modelpress_upload_bytes"  # the counter family, as parsed


def _count(scraped: dict[str, Any], route: str, status: str) -> float:
    return value(scraped, HTTP, f"{HTTP}_count", route=route, status=status)


def test_requests_are_labelled_by_route_template_never_the_path(client: Any) -> None:
    before = scrape(client)
    ids = [str(uuid.uuid4()) for _ in range(3)]

    for job_id in ids:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404

    after = scrape(client)
    route = "/v1/jobs/{job_id}"
    assert _count(after, route, "404") - _count(before, route, "404") == 3
    labels = {s.labels.get("route", "") for s in samples(after, HTTP, f"{HTTP}_count")}
    assert not any(job_id in label for job_id in ids for label in labels)
    assert after[HTTP].type == "histogram"


def test_a_body_refused_before_routing_keeps_its_route(client: Any) -> None:
    before = scrape(client)

    response = client.post(
        "/v1/jobs", content=b"x" * (2 * 1024**2), headers={"content-type": "application/json"}
    )

    after = scrape(client)
    assert response.status_code == 413
    assert _count(after, "/v1/jobs", "413") - _count(before, "/v1/jobs", "413") == 1


def test_uploads_count_their_bytes_by_kind(client: Any, mlp_onnx: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.ones((4, 32), dtype=np.float32))
    dataset = buffer.getvalue()
    before = scrape(client)

    model = client.post("/v1/models", files={"file": ("mlp.onnx", mlp_onnx.read_bytes())})
    data = client.post("/v1/datasets", files={"file": ("d.npz", dataset)})

    after = scrape(client)
    total = f"{UPLOADS}_total"
    assert model.status_code == 201 and data.status_code == 201, (model.text, data.text)
    grew = {
        kind: value(after, UPLOADS, total, kind=kind) - value(before, UPLOADS, total, kind=kind)
        for kind in ("model", "dataset")
    }
    assert grew == {"model": mlp_onnx.stat().st_size, "dataset": len(dataset)}
    assert after[UPLOADS].type == "counter"


async def _stream_through_middleware() -> list[bytes]:
    """A streamed response whose second chunk is produced only once the first has reached the
    client: a middleware that buffered would wait forever (bounded by the timeout)."""
    first_sent = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await first_sent.wait()
        yield b"second"

    async def endpoint(_request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    inner = Starlette(routes=[Route("/stream", endpoint)])
    app = RequestMetricsMiddleware(inner, routes=lambda: inner.routes)
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the client never disconnects during the test
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            first_sent.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return received


def _streamed() -> float:
    labels = {"route": "/stream", "status": "200"}
    return names.PROCESS_REGISTRY.get_sample_value(f"{HTTP}_count", labels) or 0.0


def test_the_middleware_streams_a_response_as_it_comes() -> None:
    before = _streamed()

    received = asyncio.run(_stream_through_middleware())

    assert received == [b"first", b"second"]
    assert _streamed() == before + 1
