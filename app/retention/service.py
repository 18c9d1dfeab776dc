"""Retention: objects older than MODELPRESS_RETENTION_DAYS expire.

An expired job loses its artifacts and report, an expired model or dataset its bytes; each keeps
a tombstone row so that reads answer 410 Gone (not 404: the client learns the object existed
and why it is gone). Jobs count from when they finished, models and datasets from their upload;
a model or dataset that a queued or running job still needs waits for that job. The bytes go
through app/blobs, so bytes another live object shares stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from app.blobs.service import release_after_commit
from app.core.config import Settings
from app.core.storage import Storage
from app.db.base import utcnow
from app.jobs import events as job_events
from app.retention import repository

log = logging.getLogger(__name__)


@dataclass
class Expired:
    """What one retention round expired (ids)."""

    jobs: list[str]
    models: list[str]
    datasets: list[str]


def expire(session: Session, storage: Storage, settings: Settings) -> Expired:
    """One retention round (a no-op when MODELPRESS_RETENTION_DAYS is 0)."""
    done = Expired([], [], [])
    if settings.retention_days <= 0:
        return done
    now = utcnow()
    cutoff, grace = now - timedelta(days=settings.retention_days), settings.blob_grace_seconds
    for job_id in repository.finished_jobs_before(session, cutoff):
        for key in set(repository.expire_job(session, job_id, now)):
            release_after_commit(session, storage, key, grace)
        done.jobs.append(job_id)
    job_events.delete_for(session, done.jobs)  # an expired job's log and events go with its bytes
    models, datasets = repository.old_models_and_datasets(session, cutoff)
    for key in [m.storage_key for m in models] + [d.storage_key for d in datasets]:
        release_after_commit(session, storage, key, grace)
    for model in models:
        model.expired_at = now
    for dataset in datasets:
        dataset.expired_at = now
    done.models = [m.id for m in models]
    done.datasets = [d.id for d in datasets]
    if done.jobs or done.models or done.datasets:
        log.info(
            "retention expired objects",
            extra={
                "jobs": len(done.jobs),
                "models": len(done.models),
                "datasets": len(done.datasets),
            },
        )
    return done
