"""`GET /v1/jobs/{id}/events` (server-sent events) and `/logs` against the app, on a real
migrated database; no worker runs here, so the tests write the worker's events themselves
(app/jobs/events.py, as worker/execute.py does) or cancel the queued job."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from support import assert_problem

from app.core.auth import create_key
from app.core.config import get_settings
from app.db.base import utcnow
from app.db.orm import Job, JobEvent, MlModel
from app.db.session import session_scope
from app.jobs import events, router, service
from app.main import create_app


@pytest.fixture(autouse=True)
def _fast_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router, "EVENTS_POLL_SECONDS", 0.02)


def _read(client: Any, job_id: str, **kwargs: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The whole stream (it must end by itself): its events and its comment lines."""
    with client.stream("GET", f"/v1/jobs/{job_id}/events", **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return _parse(response.iter_lines())


def _parse(lines: Iterator[str]) -> tuple[list[dict[str, Any]], list[str]]:
    found, comments, current = [], [], dict[str, Any]()
    for line in lines:
        if not line:
            if current:
                found.append(current)
            current = {}
        elif line.startswith(":"):
            comments.append(line)
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return found, comments


def _write(url: str, job_id: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
    with session_scope(url) as session:
        events.record_many(session, job_id, batch)


def _finish(url: str, job_id: str, status: str = "succeeded") -> None:
    """What the worker's final transition does: the row and its `status` event, one commit."""
    with session_scope(url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
        events.record_status(session, job_id, status)


# ---------------------------------------------------------------- the stream


def test_a_finished_job_replays_its_events_in_order_and_ends(
    client: Any, job: dict[str, Any]
) -> None:
    client.post(f"/v1/jobs/{job['id']}/cancel")

    found, _ = _read(client, job["id"])

    assert [(e["id"], e["event"]) for e in found] == [
        ("1", "status"),
        ("2", "log"),
        ("3", "status"),
    ]
    assert found[0]["data"] == {"id": job["id"], "status": "queued", "attempt": 0}
    assert found[2]["data"]["status"] == "cancelled"


def test_ids_increase_by_one_across_writers(
    client: Any, job: dict[str, Any], env: dict[str, str]
) -> None:
    """Four threads writing at once (as the heartbeat, the reaper and an API cancel may) get
    distinct, gap-free ids from the counter on the job row."""
    url = env["MODELPRESS_DATABASE_URL"]

    def writer(n: int) -> None:
        for i in range(10):
            _write(url, job["id"], [("log", events.log_data(f"writer {n} line {i}"))])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _finish(url, job["id"])

    found, _ = _read(client, job["id"])

    assert [int(e["id"]) for e in found] == list(range(1, 43))
    assert found[-1]["data"]["status"] == "succeeded"


def test_last_event_id_resumes_after_it_without_repeats(client: Any, job: dict[str, Any]) -> None:
    client.post(f"/v1/jobs/{job['id']}/cancel")

    resumed, _ = _read(client, job["id"], headers={"Last-Event-ID": "1"})
    after, _ = _read(client, job["id"], params={"after": 2})
    past_the_end, _ = _read(client, job["id"], headers={"Last-Event-ID": "3"})

    assert [e["id"] for e in resumed] == ["2", "3"]
    assert [e["id"] for e in after] == ["3"]
    assert past_the_end == []


def test_a_live_stream_sends_heartbeats_and_ends_after_the_terminal_status(
    client: Any, job: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router, "EVENTS_HEARTBEAT_SECONDS", 0.1)
    url = env["MODELPRESS_DATABASE_URL"]
    lines: list[str] = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        for line in response.iter_lines():  # ends only if the stream ends after `cancelled`
            lines.append(line)
            if line == ": heartbeat" and lines.count(line) == 1:
                _write(url, job["id"], [("progress", {"fraction": 0.5, "message": "half"})])
            if line == ": heartbeat" and lines.count(line) == 2:
                with session_scope(url) as session:
                    tenant_id = session.get(Job, job["id"]).tenant_id  # type: ignore[union-attr]
                    service.cancel_job(session=session, tenant_id=tenant_id, job_id=job["id"])

    found, comments = _parse(iter(lines))
    assert [e["event"] for e in found] == ["status", "progress", "log", "status"]
    assert found[1]["data"] == {"fraction": 0.5, "message": "half"}
    assert found[-1]["data"]["status"] == "cancelled"
    assert comments.count(": heartbeat") >= 2


def test_a_job_deleted_mid_stream_ends_it(
    client: Any, job: dict[str, Any], env: dict[str, str]
) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        lines = response.iter_lines()
        assert next(lines).startswith(":")  # the stream is open
        with session_scope(url) as session:
            session.execute(update(Job).where(Job.id == job["id"]).values(status="failed"))
        client.delete(f"/v1/jobs/{job['id']}")
        rest = list(lines)

    found, _ = _parse(iter(rest))
    assert [e["data"].get("status") for e in found] == ["queued"]
    with session_scope(url) as session:
        count = session.scalar(select(func.count()).select_from(JobEvent))
    assert count == 0  # a deleted job's events go with it


def test_unknown_job_is_404(client: Any) -> None:
    assert_problem(client.get(f"/v1/jobs/{uuid.uuid4()}/events"), 404, "not_found")
    assert_problem(client.get(f"/v1/jobs/{uuid.uuid4()}/logs"), 404, "not_found")


def test_expired_job_is_410(client: Any, job: dict[str, Any], env: dict[str, str]) -> None:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(expired_at=utcnow()))

    assert_problem(client.get(f"/v1/jobs/{job['id']}/events"), 410, "expired")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/logs"), 410, "expired")


@pytest.mark.parametrize("value", ["abc", "-1", "1e3"])
def test_a_malformed_last_event_id_is_a_400_problem(
    client: Any, job: dict[str, Any], value: str
) -> None:
    response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": value})

    assert_problem(response, 400, "invalid_last_event_id")


def test_another_tenants_job_is_404(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, mlp_onnx: Path
) -> None:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    url = env["MODELPRESS_DATABASE_URL"]
    with TestClient(create_app()) as client:
        with session_scope(url) as session:
            keys = {t: create_key(session, f"tenant-{t}", get_settings()) for t in "ab"}
        owner = {"Authorization": f"Bearer {keys['a']}"}
        stranger = {"Authorization": f"Bearer {keys['b']}"}
        upload = {"file": ("mlp.onnx", mlp_onnx.read_bytes())}
        model_id = client.post("/v1/models", files=upload, headers=owner).json()["id"]
        with session_scope(url) as session:
            session.execute(update(MlModel).where(MlModel.id == model_id).values(status="ready"))
        spec = {"model_id": model_id, "steps": [{"op": "quantize"}]}
        job_id = client.post("/v1/jobs", json=spec, headers=owner).json()["id"]
        _finish(url, job_id)

        own, _ = _read(client, job_id, headers=owner)
        assert [e["data"]["status"] for e in own] == ["queued", "succeeded"]
        assert client.get(f"/v1/jobs/{job_id}/logs", headers=owner).status_code == 200
        assert_problem(client.get(f"/v1/jobs/{job_id}/events", headers=stranger), 404, "not_found")
        assert_problem(client.get(f"/v1/jobs/{job_id}/logs", headers=stranger), 404, "not_found")
        assert client.get(f"/v1/jobs/{job_id}/events").status_code == 401


# ---------------------------------------------------------------- the log


def test_logs_are_text_lines_with_utc_times(
    client: Any, job: dict[str, Any], env: dict[str, str]
) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    _write(url, job["id"], [("log", events.log_data("claimed by host:1 (attempt 1)"))])
    _write(url, job["id"], [("log", {"message": "step 1/1 quantize started", "source": "job"})])
    _write(url, job["id"], [("progress", {"fraction": 0.5, "message": "not a log line"})])

    response = client.get(f"/v1/jobs/{job['id']}/logs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert [line.split(" ", 3)[1:] for line in lines] == [
        ["worker", "INFO", "claimed by host:1 (attempt 1)"],
        ["job", "INFO", "step 1/1 quantize started"],
    ]
    assert all(line[:4].isdigit() and line.split(" ", 1)[0].endswith("Z") for line in lines)


def test_logs_answer_at_most_the_last_megabyte_in_whole_lines(
    client: Any, job: dict[str, Any], env: dict[str, str]
) -> None:
    lines = [("log", events.log_data(f"line {i:05d} " + "x" * 980)) for i in range(1300)]
    _write(env["MODELPRESS_DATABASE_URL"], job["id"], lines)

    text = client.get(f"/v1/jobs/{job['id']}/logs").text

    assert len(text.encode()) <= events.LOGS_MAX_BYTES
    assert len(text.encode()) > events.LOGS_MAX_BYTES - 1100  # all that fits, not less
    kept = text.splitlines()
    assert kept[-1].split(" ")[3:5] == ["line", "01299"]
    assert all(" line " in line and line.endswith("x") for line in kept)  # no cut line
    numbers = [int(line.split(" ")[4]) for line in kept]
    assert numbers == list(range(1300 - len(kept), 1300))


def test_a_long_log_message_is_cut_to_one_line(
    client: Any, job: dict[str, Any], env: dict[str, str]
) -> None:
    _write(env["MODELPRESS_DATABASE_URL"], job["id"], [("log", events.log_data("a\nb" * 5000))])

    text = client.get(f"/v1/jobs/{job['id']}/logs").text

    assert text.count("\n") == 1
    assert len(text) < events.MESSAGE_MAX_CHARS + 100
