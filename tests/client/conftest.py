"""The client against the real app (`client`, `model_id`, `job`: tests/conftest.py) through the
TestClient's transport, and a way to move a job along as a worker would (no worker runs here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from support import report_document

from app.client import Client
from app.db.orm import Job, MlModel
from app.db.session import session_scope

INPUTS = [{"name": "input", "dtype": "float32", "shape": ["batch", 32]}]
OUTPUTS = [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}]

Step = dict[str, Any]


# Hop-by-hop and framing headers: each side sets its own.
FRAMING = {"host", "content-length", "transfer-encoding", "content-encoding", "connection"}


class AppTransport(httpx.BaseTransport):
    """httpx requests answered by the app through its TestClient (starlette's TestClient is an
    `httpx2` client, whose transport httpx cannot take): the body is streamed out of the
    client's generator, the answer handed back whole.

    An answer handed back whole cannot be an event stream that waits for a worker which moves
    only at the client's `sleep`: with `events_route=False` the app is a server without
    `GET /v1/jobs/{id}/events` (404), and the client follows jobs by polling."""

    def __init__(self, test_client: Any, events_route: bool = True) -> None:
        self.test_client, self.events_route = test_client, events_route

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.events_route and request.url.path.endswith("/events"):
            problem = {"type": "about:blank", "status": 404, "code": "not_found"}
            return httpx.Response(404, json=problem)
        body = request.read()  # the client's generator, drained
        headers = [(k, v) for k, v in request.headers.multi_items() if k not in FRAMING]
        answer = self.test_client.request(
            request.method, str(request.url), headers=headers, content=body
        )
        back = [(k, v) for k, v in answer.headers.multi_items() if k not in FRAMING]
        return httpx.Response(answer.status_code, headers=back, content=answer.content)


@pytest.fixture
def api(client: Any) -> Iterator[Client]:
    """A `Client` whose requests the real app answers (in process), following jobs by polling
    (the scripted worker below moves a job at the client's `sleep`, see AppTransport)."""
    transport = AppTransport(client, events_route=False)
    with Client("http://testserver", transport=transport, sleep=lambda s: None) as api:
        yield api


@pytest.fixture
def sse_api(client: Any) -> Iterator[Client]:
    """A `Client` on the real app's event stream (of jobs that end: the answer comes whole)."""
    with Client("http://testserver", transport=AppTransport(client), sleep=lambda s: None) as api:
        yield api


@pytest.fixture
def set_job(env: dict[str, str]) -> Callable[..., None]:
    """Write a job's columns as the worker does (status, progress, error)."""

    def _set(job_id: str, **values: Any) -> None:
        with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    return _set


@pytest.fixture
def worker_script(set_job: Callable[..., None]) -> Callable[[str, list[Step]], Callable]:
    """A `sleep` for the client that, at each call, applies the next scripted change to the job:
    what a worker would have done while the client waited."""

    def _script(job_id: str, steps: list[Step]) -> Callable[[float], None]:
        pending = list(steps)

        def sleep(_seconds: float) -> None:
            if pending:
                set_job(job_id, **pending.pop(0))

        return sleep

    return _script


@pytest.fixture
def finish_job(
    set_job: Callable[..., None], store_artifact: Callable[..., str]
) -> Callable[[str, bool | None], None]:
    """Publish a model, both reports and `succeeded`, as a worker finishing the job does."""

    def _finish(job_id: str, met: bool | None = True) -> None:
        store_artifact(job_id, "model.onnx", b"optimized onnx", "application/octet-stream")
        report = json.dumps(report_document(job_id, met, optimized_size=40)).encode()
        store_artifact(job_id, "report.json", report, "application/json")
        store_artifact(job_id, "report.html", b"<!doctype html><p>ok</p>", "text/html")
        set_job(job_id, status="succeeded", progress={"fraction": 1.0, "message": "succeeded"})

    return _finish


@pytest.fixture
def limited_api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A `Client` on a real app allowing 3 requests a minute (MODELPRESS_RATE_LIMIT_PER_MINUTE)."""
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("MODELPRESS_RATE_LIMIT_PER_MINUTE", "3")
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        transport = AppTransport(test_client)
        with Client("http://testserver", transport=transport, sleep=lambda s: None) as api:
            yield api


@pytest.fixture
def fake_worker(env: dict[str, str], finish_job: Callable[..., None]) -> Callable[..., Callable]:
    """`fake_worker(met)`: a `sleep` for the client that does, one change per call, what the
    worker would: inspect the uploaded model (`ready`, or `rejected` with `reject`), start the
    job, finish it with a verdict `met`."""
    url = env["MODELPRESS_DATABASE_URL"]

    def _make(met: bool | None = True, reject: bool = False) -> Callable[[float], None]:
        def sleep(_seconds: float) -> None:
            with session_scope(url) as session:
                ids = list(
                    session.scalars(select(MlModel.id).where(MlModel.status == "validating"))
                )
                if ids:
                    inspected = (
                        {"status": "rejected", "error": {"code": "bad_model", "detail": "no"}}
                        if reject
                        else {"status": "ready", "inputs": INPUTS, "outputs": OUTPUTS}
                    )
                    session.execute(update(MlModel).where(MlModel.id.in_(ids)).values(**inspected))
                    return
                row = session.execute(select(Job.id, Job.status)).first()
            if row is not None and row.status == "queued":
                progress = {"fraction": 0.5, "message": "step 1/1: quantize", "step": 0}
                with session_scope(url) as session:
                    session.execute(update(Job).values(status="running", progress=progress))
            elif row is not None and row.status == "running":
                finish_job(row.id, met=met)

        return sleep

    return _make
