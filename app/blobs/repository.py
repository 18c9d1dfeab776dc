"""Which rows, of every kind, still refer to a stored blob."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select, union
from sqlalchemy.orm import Session

from app.db.orm import Artifact, Dataset, Job, JobStatus, MlModel, ModelStatus

# Every table whose rows point at a blob. A kind added later must be added here, or its blobs
# would be collected under it (tests/blobs/test_service.py checks the list against the ORM).
REFERRING = (MlModel, Dataset, Artifact)


def _keys_of(kind: type[MlModel] | type[Dataset] | type[Artifact]) -> Select[Any]:
    stmt = select(kind.storage_key)
    if kind is MlModel:  # a rejected or expired model keeps its row, not its bytes
        stmt = stmt.where(MlModel.status != ModelStatus.rejected, MlModel.expired_at.is_(None))
    elif kind is Dataset:  # retention keeps an expired dataset's row as a tombstone
        stmt = stmt.where(Dataset.expired_at.is_(None))
    return stmt


def is_referenced(session: Session, storage_key: str) -> bool:
    """True while any model, dataset or artifact, of any tenant, refers to the key."""
    return any(
        session.scalar(_keys_of(kind).where(kind.storage_key == storage_key).limit(1))
        for kind in REFERRING
    )


def referenced_keys(session: Session) -> set[str]:
    """Every key some row refers to (one query; the collector compares the disk against it)."""
    return set(session.scalars(union(*(_keys_of(kind) for kind in REFERRING))))


def active_scratch_prefixes(session: Session) -> set[str]:
    """The scratch names of job attempts still running and inspections still pending."""
    running = session.execute(
        select(Job.id, Job.attempt).where(Job.status == JobStatus.running)
    ).all()
    validating = session.scalars(select(MlModel.id).where(MlModel.status == ModelStatus.validating))
    return {f"job-{job_id}-a{attempt}" for job_id, attempt in running} | {
        f"inspect-{model_id}" for model_id in validating
    }
