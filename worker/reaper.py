"""Housekeeping: requeue jobs whose worker died, re-publish lost messages, retry inspections,
expire old objects (retention), collect unreferenced blobs and scratch, scrub stored bytes."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.blobs import service as blobs
from app.core.config import Settings
from app.core.queue import INSPECT_MODEL, RUN_JOB, job_queue, publish_after_commit
from app.core.storage import get_storage
from app.db.base import utcnow
from app.db.orm import Job, JobStatus, MlModel
from app.db.session import session_scope
from app.jobs import events as job_events
from app.jobs import repository as jobs
from app.metrics import service as job_metrics
from app.ml_models import repository as models
from app.retention import service as retention
from app.webhooks import service as webhooks

log = logging.getLogger(__name__)


def _release(session: Session, job: Job, settings: Settings) -> bool:
    """Requeue a running job whose worker is gone, or fail it after the last attempt (cancel it
    if a cancel was asked); False when another transition got there first."""
    if job.cancel_requested:
        values: dict[str, object] = {
            "status": JobStatus.cancelled,
            "finished_at": utcnow(),
            "lease_expires_at": None,
        }
    elif job.attempt >= settings.job_max_attempts:
        values = {
            "status": JobStatus.failed,
            "finished_at": utcnow(),
            "lease_expires_at": None,
            "error": {
                "type": "https://modelpress.dev/problems/worker_lost",
                "title": "Job failed",
                "status": 422,
                "detail": f"The worker running this job stopped answering "
                f"({job.attempt} attempts).",
                "code": "worker_lost",
            },
        }
    else:
        values = {"status": JobStatus.queued, "lease_expires_at": None, "dispatched_at": utcnow()}
    if not jobs.transition(session, job.id, {JobStatus.running}, values, attempt=job.attempt):
        return False
    status = str(values["status"])
    lines: dict[str, str] = {
        JobStatus.queued: f"the worker of attempt {job.attempt} stopped answering; requeued",
        JobStatus.cancelled: "the worker stopped answering; cancelled as requested",
    }
    line = lines.get(status, f"the worker stopped answering ({job.attempt} attempts); failed")
    error = values.get("error")
    job_events.record_many(
        session,
        job.id,
        [
            ("log", job_events.log_data(line, level="warning")),
            ("status", job_events.status_data(job.id, status, attempt=job.attempt, error=error)),
        ],
    )
    if values["status"] == JobStatus.queued:
        publish_after_commit(session, RUN_JOB, job.id, _queue(job))
    else:
        webhooks.enqueue_terminal(session, job.id)
        job_metrics.record_terminal(session, job.id)
    log.warning("reaped job", extra={"job_id": job.id, "to": str(values["status"])})
    return True


def reap_expired(settings: Settings) -> int:
    """Running jobs whose lease lapsed: requeue them, or fail them after the last attempt."""
    with session_scope() as session:
        return sum(
            _release(session, job, settings) for job in jobs.expired_running(session, utcnow())
        )


def requeue_abandoned(settings: Settings, worker: str) -> int:
    """At once, without waiting for the lease: the running jobs of a worker known to be dead
    (`modelpress run` restarting its embedded worker names the one it replaces)."""
    with session_scope() as session:
        return sum(_release(session, job, settings) for job in jobs.running_on(session, worker))


def redispatch(settings: Settings, everything: bool = False) -> int:
    """Re-publish queued jobs whose message may be lost (a second copy is a harmless no-op);
    `everything` re-publishes every queued job (at worker start)."""
    cutoff = utcnow() - timedelta(seconds=0 if everything else settings.redispatch_after_seconds)
    with session_scope() as session:
        queued = jobs.queued(session, cutoff)
        for job in queued:
            jobs.transition(session, job.id, {JobStatus.queued}, {"dispatched_at": utcnow()})
            publish_after_commit(session, RUN_JOB, job.id, _queue(job))
        stale = utcnow() - timedelta(seconds=settings.inspect_wall_seconds + 30)
        model_ids = models.validating_ids(session, stale)
        for model_id in model_ids:
            session.execute(
                update(MlModel).where(MlModel.id == model_id).values(updated_at=utcnow())
            )
            publish_after_commit(session, INSPECT_MODEL, model_id)
    return len(queued) + len(model_ids)


def _queue(job: Job) -> str:
    return job_queue(str((job.spec or {}).get("device", "cpu")))


class StorageHousekeeping:
    """Retention and garbage collection, and the scrub, each at its interval, from the tick.

    The collector runs at the first tick; the scrub (a re-hash of every blob) waits one full
    interval, so a restart does not re-read the whole store.
    """

    def __init__(self) -> None:
        self.last_gc = float("-inf")
        self.last_scrub = time.monotonic()

    def __call__(self, settings: Settings) -> None:
        now, storage = time.monotonic(), get_storage(settings)
        if now - self.last_gc >= settings.gc_interval_seconds:
            self.last_gc = now
            with session_scope() as session:
                retention.expire(session, storage, settings)
            with session_scope() as session:
                blobs.collect_garbage(session, storage, settings)
        if settings.scrub_interval_seconds and now - self.last_scrub >= (
            settings.scrub_interval_seconds
        ):
            self.last_scrub = now
            blobs.scrub(storage)


housekeep_storage = StorageHousekeeping()


def tick(settings: Settings) -> None:
    """One housekeeping round (the scheduler and the embedded worker call it periodically)."""
    reap_expired(settings)
    if not settings.embedded_queue:
        redispatch(settings)
    try:
        housekeep_storage(settings)
    except Exception:
        log.exception("storage housekeeping failed; it runs again at the next tick")
    try:
        webhooks.deliver_due(settings)
    except Exception:
        log.exception("webhook delivery failed; it runs again at the next tick")
