"""The queries of retention: what is old enough, and not needed by a job still to run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.db.orm import Artifact, Dataset, Job, MlModel
from app.db.orm.job import TERMINAL
from app.jobs.schemas import dataset_refs

BATCH = 500


def finished_jobs_before(session: Session, cutoff: datetime) -> list[str]:
    stmt = select(Job.id).where(
        Job.expired_at.is_(None), Job.status.in_(TERMINAL), Job.finished_at < cutoff
    )
    return list(session.scalars(stmt.limit(BATCH)))


def expire_job(session: Session, job_id: str, now: datetime) -> list[str]:
    """Tombstone a job and delete its artifact rows; returns the keys they referred to."""
    keys = list(session.scalars(select(Artifact.storage_key).where(Artifact.job_id == job_id)))
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(update(Job).where(Job.id == job_id).values(expired_at=now, updated_at=now))
    return keys


def _active_specs(session: Session) -> list[tuple[str, dict[str, Any]]]:
    stmt = select(Job.model_id, Job.spec).where(Job.status.not_in(TERMINAL))
    return [(model_id, spec or {}) for model_id, spec in session.execute(stmt)]


def old_models_and_datasets(
    session: Session, cutoff: datetime
) -> tuple[list[MlModel], list[Dataset]]:
    """Models and datasets created before the cutoff that no queued or running job needs."""
    active = _active_specs(session)
    busy_models = {model_id for model_id, _spec in active}
    busy_datasets = {dataset_id for _m, spec in active for _p, dataset_id in dataset_refs(spec)}
    models = session.scalars(
        select(MlModel)
        .where(MlModel.expired_at.is_(None), MlModel.created_at < cutoff)
        .limit(BATCH)
    )
    datasets = session.scalars(
        select(Dataset)
        .where(Dataset.expired_at.is_(None), Dataset.created_at < cutoff)
        .limit(BATCH)
    )
    return (
        [m for m in models if m.id not in busy_models],
        [d for d in datasets if d.id not in busy_datasets],
    )
