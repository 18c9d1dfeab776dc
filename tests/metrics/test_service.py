"""The durable job metrics on real migrated databases (SQLite, and Postgres where configured):
recorded with the transitions they count, never lowered by deleting or expiring jobs."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from prom import samples, scrape, value
from sqlalchemy import select, update

from app.core import metrics as names
from app.core.config import get_settings
from app.core.storage import get_storage
from app.db.base import utcnow
from app.db.orm import Job, JobStatus, MetricSample
from app.db.session import session_scope
from app.jobs import repository as jobs
from app.metrics import repository, service
from app.retention import service as retention

JOBS = "modelpress_jobs"  # the counter family, as parsed (`_total` is its sample's suffix)


def _finish(job_id: str, status: str, ran_s: float | None) -> None:
    """Move a queued job to `status` as a worker would (after running `ran_s` seconds), and
    record it as the worker's final transition does."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "finished_at": now}
    if ran_s is not None:
        values["started_at"] = now - timedelta(seconds=ran_s)
    with session_scope() as session:
        assert jobs.transition(session, job_id, {JobStatus.queued, JobStatus.running}, values)
        service.record_terminal(session, job_id, [("quantize", 0.3), ("export", 42.0)])


def test_op_label_joins_the_steps_ops_or_says_auto() -> None:
    steps = [{"op": "prune", "method": "channel"}, {"op": "distill"}, {"op": "quantize"}]

    assert service.job_op({"steps": steps}) == "prune+distill+quantize"
    assert service.job_op({"recipe": "auto", "constraints": {}}) == "auto"


def test_cancelling_a_queued_job_counts_it_once(client: Any, job: dict[str, Any]) -> None:
    first = client.post(f"/v1/jobs/{job['id']}/cancel")
    again = client.post(f"/v1/jobs/{job['id']}/cancel")

    scraped = scrape(client)
    assert first.status_code == 200, first.text
    assert again.status_code == 409
    assert value(scraped, JOBS, names.JOBS_TOTAL, op="quantize", status="cancelled") == 1
    # It never ran: no duration, no queue wait (it never left the queue).
    assert samples(scraped, names.JOB_DURATION, f"{names.JOB_DURATION}_count") == []
    assert samples(scraped, names.QUEUE_WAIT, f"{names.QUEUE_WAIT}_count") == []


def test_counters_survive_deleting_the_job(client: Any, job: dict[str, Any]) -> None:
    _finish(job["id"], JobStatus.succeeded, ran_s=7.0)
    before = scrape(client)

    deleted = client.delete(f"/v1/jobs/{job['id']}")

    after = scrape(client)
    assert deleted.status_code == 204, deleted.text
    key = {"op": "quantize", "status": "succeeded"}
    assert value(before, JOBS, names.JOBS_TOTAL, **key) == 1
    assert value(after, JOBS, names.JOBS_TOTAL, **key) == 1
    count = f"{names.JOB_DURATION}_count"
    assert value(after, names.JOB_DURATION, count, op="quantize") == 1
    assert value(before, names.JOBS_CURRENT, names.JOBS_CURRENT, status="succeeded") == 1
    assert value(after, names.JOBS_CURRENT, names.JOBS_CURRENT, status="succeeded") == 0


def test_counters_survive_retention(
    client: Any, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _finish(job["id"], JobStatus.failed, ran_s=1.0)
    with session_scope() as session:
        old = utcnow() - timedelta(days=30)
        session.execute(update(Job).where(Job.id == job["id"]).values(finished_at=old))
    monkeypatch.setenv("MODELPRESS_RETENTION_DAYS", "7")
    get_settings.cache_clear()

    with session_scope() as session:
        retention.expire(session, get_storage(), get_settings())

    gone = client.get(f"/v1/jobs/{job['id']}")
    scraped = scrape(client)
    assert gone.status_code == 410, gone.text
    assert value(scraped, JOBS, names.JOBS_TOTAL, op="quantize", status="failed") == 1


def test_a_terminal_job_observes_its_duration_and_steps(client: Any, job: dict[str, Any]) -> None:
    _finish(job["id"], JobStatus.succeeded, ran_s=7.0)

    scraped = scrape(client)

    duration = f"{names.JOB_DURATION}_bucket"
    assert value(scraped, names.JOB_DURATION, duration, op="quantize", le="5.0") == 0
    assert value(scraped, names.JOB_DURATION, duration, op="quantize", le="15.0") == 1
    assert value(scraped, names.JOB_DURATION, duration, op="quantize", le="+Inf") == 1
    ran = value(scraped, names.JOB_DURATION, f"{names.JOB_DURATION}_sum", op="quantize")
    assert ran == pytest.approx(7.0, abs=0.01)
    step = f"{names.STEP_DURATION}_bucket"
    assert value(scraped, names.STEP_DURATION, step, op="quantize", le="0.1") == 0
    assert value(scraped, names.STEP_DURATION, step, op="quantize", le="0.5") == 1
    assert value(scraped, names.STEP_DURATION, step, op="export", le="30.0") == 0
    assert value(scraped, names.STEP_DURATION, step, op="export", le="60.0") == 1
    total = value(scraped, names.STEP_DURATION, f"{names.STEP_DURATION}_sum", op="export")
    assert total == pytest.approx(42.0)


def test_queue_wait_is_observed_at_the_first_claim(client: Any, job: dict[str, Any]) -> None:
    with session_scope() as session:
        created = utcnow() - timedelta(seconds=20)
        session.execute(update(Job).where(Job.id == job["id"]).values(created_at=created))

    with session_scope() as session:
        attempt = jobs.claim(session, job["id"], "test-worker", 60)
        service.record_queue_wait(session, job["id"])

    scraped = scrape(client)
    bucket = f"{names.QUEUE_WAIT}_bucket"
    assert attempt == 1
    assert value(scraped, names.QUEUE_WAIT, bucket, op="quantize", le="15.0") == 0
    assert value(scraped, names.QUEUE_WAIT, bucket, op="quantize", le="30.0") == 1
    assert value(scraped, names.QUEUE_WAIT, f"{names.QUEUE_WAIT}_count", op="quantize") == 1


def test_a_transition_rolled_back_counts_nothing(client: Any, job: dict[str, Any]) -> None:
    with session_scope() as session:
        jobs.transition(session, job["id"], {JobStatus.queued}, {"status": JobStatus.failed})
        service.record_terminal(session, job["id"])
        session.rollback()

    scraped = scrape(client)
    assert value(scraped, JOBS, names.JOBS_TOTAL, op="quantize", status="failed") == 0


def test_increments_from_concurrent_transactions_all_count(env: dict[str, str]) -> None:
    key = (names.JOBS_TOTAL, '{"op":"x","status":"succeeded"}')
    threads, per_thread = 4, 10
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(per_thread):
                with session_scope() as session:
                    repository.increment(session, {key: 1.0})
        except BaseException as exc:  # reported below: a lost update or a lock error
            errors.append(exc)

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    with session_scope() as session:
        stored = session.scalar(select(MetricSample.value).where(MetricSample.name == key[0]))
    assert errors == []
    assert stored == threads * per_thread


def test_step_timings_take_only_finished_known_steps_with_sane_numbers() -> None:
    records: list[Any] = [
        {"kind": "step", "index": 0, "op": "prune.channel", "phase": "started"},
        {"kind": "step", "index": 0, "op": "prune.channel", "phase": "finished", "wall_s": 2.5},
        {"kind": "step", "index": 1, "op": "../../etc", "phase": "finished", "wall_s": 1.0},
        {"kind": "step", "index": 2, "op": "quantize", "phase": "finished", "wall_s": "1"},
        {"kind": "step", "index": 3, "op": "quantize", "phase": "finished", "wall_s": -1.0},
        {"kind": "step", "index": 4, "op": "quantize", "phase": "finished", "wall_s": 1e999},
        {"fraction": 0.5, "message": "step 1/2"},
        "not a record",
        {"kind": "step", "index": 5, "op": "export", "phase": "finished", "wall_s": 0},
    ]

    assert service.step_timings(records) == [("prune.channel", 2.5), ("export", 0.0)]


def test_metric_families_have_their_prometheus_types(client: Any, job: dict[str, Any]) -> None:
    _finish(job["id"], JobStatus.succeeded, ran_s=1.0)

    scraped = scrape(client)

    assert scraped[JOBS].type == "counter"
    assert scraped[names.JOBS_CURRENT].type == "gauge"
    for histogram in (names.JOB_DURATION, names.STEP_DURATION, names.QUEUE_WAIT):
        assert scraped[histogram].type == "histogram"


def test_the_reaper_failing_a_job_counts_it_once(
    client: Any, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.reaper import reap_expired

    monkeypatch.setenv("MODELPRESS_JOB_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    with session_scope() as session:
        assert jobs.claim(session, job["id"], "gone-worker", 60) == 1
        lapsed = utcnow() - timedelta(seconds=5)
        session.execute(update(Job).where(Job.id == job["id"]).values(lease_expires_at=lapsed))

    reaped = [reap_expired(get_settings()), reap_expired(get_settings())]

    scraped = scrape(client)
    assert reaped == [1, 0]
    assert value(scraped, JOBS, names.JOBS_TOTAL, op="quantize", status="failed") == 1
