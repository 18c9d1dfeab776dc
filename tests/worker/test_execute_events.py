"""What the worker writes to a job's event stream between the claim and the end: the heartbeat
relays the child's records at most once a second and only what changed; the reaper tells of a
requeue. (A whole real job's stream: tests/integration/test_job_events.py.)"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.core.config import get_settings
from app.db.base import utcnow
from app.db.orm import Job, JobEvent
from app.db.session import session_scope
from app.jobs import repository as jobs
from worker import execute, reaper


def _events(url: str, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with session_scope(url) as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
        return sorted((e.seq, e.event, e.data) for e in rows)


@pytest.fixture
def claimed(job: dict[str, Any], env: dict[str, str]) -> tuple[str, int]:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        attempt = jobs.claim(session, job["id"], "test-worker", 60)
    assert attempt == 1
    return job["id"], attempt


def test_heartbeat_writes_progress_at_most_once_a_second_and_on_change(
    claimed: tuple[str, int], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execute, "EVENTS_SECONDS", 0.3)
    url, (job_id, attempt) = env["MODELPRESS_DATABASE_URL"], claimed
    beat = execute.Heartbeat(job_id, attempt, get_settings(), lambda: False)
    beat.log("inputs staged")

    beat([{"fraction": 0.1, "message": "a"}])  # the first tick writes at once
    for i in range(20):  # ticks within EVENTS_SECONDS: nothing more is written
        beat([{"fraction": 0.2 + i / 100, "message": f"m{i}"}])
    early = _events(url, job_id)
    time.sleep(0.35)
    beat([])  # the latest progress only
    time.sleep(0.35)
    beat([{"fraction": 0.39, "message": "m19"}])  # unchanged: no event

    found = _events(url, job_id)
    assert [e[1] for e in early] == ["status", "log", "progress"]
    assert [(e[1], e[2]) for e in found[3:]] == [("progress", {"fraction": 0.39, "message": "m19"})]
    with session_scope(url) as session:
        assert session.get(Job, job_id).progress == {"fraction": 0.39, "message": "m19"}  # type: ignore[union-attr]


def test_heartbeat_of_a_lost_attempt_writes_no_events(
    claimed: tuple[str, int], env: dict[str, str]
) -> None:
    url, (job_id, attempt) = env["MODELPRESS_DATABASE_URL"], claimed
    beat = execute.Heartbeat(job_id, attempt + 1, get_settings(), lambda: False)  # not the owner

    stop = beat([{"fraction": 0.5, "message": "stale"}])

    assert stop is True
    assert [e[1] for e in _events(url, job_id)] == ["status"]


def test_the_reaper_tells_of_a_requeue(claimed: tuple[str, int], env: dict[str, str]) -> None:
    url, (job_id, _attempt) = env["MODELPRESS_DATABASE_URL"], claimed
    with session_scope(url) as session:
        expired = utcnow() - timedelta(seconds=5)
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=expired))

    assert reaper.reap_expired(get_settings()) == 1

    found = _events(url, job_id)
    assert [(e[1], e[2].get("status")) for e in found[-2:]] == [("log", None), ("status", "queued")]
    assert "requeued" in found[-2][2]["message"]
    assert [e[0] for e in found] == list(range(1, len(found) + 1))
