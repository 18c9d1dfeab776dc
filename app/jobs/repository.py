"""Every query on `job` and its artifacts; state changes are conditional updates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.core.pagination import paginate
from app.db.base import utcnow
from app.db.orm import Artifact, Job, JobStatus


def get(session: Session, tenant_id: str, job_id: str) -> Job | None:
    stmt = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    return session.scalars(stmt).first()


def get_by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    stmt = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.scalars(stmt).first()


def list_page(
    session: Session, tenant_id: str, status: str | None, limit: int, cursor: str | None
) -> list[Job]:
    stmt = select(Job).where(Job.tenant_id == tenant_id, Job.expired_at.is_(None))
    if status:
        stmt = stmt.where(Job.status == status)
    return list(session.scalars(paginate(stmt, Job, limit, cursor)))


def count_by_status(session: Session) -> dict[str, int]:
    """Jobs per status over every tenant: the operator's view behind `/metrics`, not a tenant's."""
    stmt = select(Job.status, func.count()).group_by(Job.status)
    return {status: int(count) for status, count in session.execute(stmt)}


def transition(
    session: Session, job_id: str, from_: set[str], values: dict[str, Any], **where: Any
) -> bool:
    """Compare-and-set: move the job only if it is in one of `from_` (and matches `where`)."""
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(from_))
    for column, value in where.items():
        stmt = stmt.where(getattr(Job, column) == value)
    result = session.execute(stmt.values(**values, updated_at=utcnow()))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def queued(session: Session, dispatched_before: datetime | None, limit: int = 100) -> list[Job]:
    stmt = select(Job).where(Job.status == JobStatus.queued)
    if dispatched_before is not None:
        stmt = stmt.where((Job.dispatched_at.is_(None)) | (Job.dispatched_at < dispatched_before))
    return list(session.scalars(stmt.order_by(Job.created_at).limit(limit)))


def expired_running(session: Session, now: datetime, limit: int = 100) -> list[Job]:
    stmt = select(Job).where(Job.status == JobStatus.running, Job.lease_expires_at < now)
    return list(session.scalars(stmt.limit(limit)))


def running_on(session: Session, worker: str) -> list[Job]:
    """The running jobs a given worker claimed."""
    stmt = select(Job).where(Job.status == JobStatus.running, Job.worker == worker)
    return list(session.scalars(stmt))


def claim(session: Session, job_id: str, worker: str, lease_seconds: int) -> int | None:
    """Take a queued job (or one whose worker's lease lapsed); returns the new attempt number.

    A second delivery of the same message finds nothing to claim and gets None.
    """
    now = utcnow()
    claimable = (Job.status == JobStatus.queued) | (
        (Job.status == JobStatus.running) & (Job.lease_expires_at < now)
    )
    stmt = (
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running,
            attempt=Job.attempt + 1,
            worker=worker,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(Job.attempt)
    )
    return session.execute(stmt).scalar_one_or_none()


def next_queued(session: Session) -> str | None:
    stmt = select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.created_at).limit(1)
    return session.scalar(stmt)


def upsert_artifact(session: Session, values: dict[str, Any]) -> None:
    """One row per (job, name): a re-run replaces the row instead of adding a second one."""
    session.execute(
        delete(Artifact).where(Artifact.job_id == values["job_id"], Artifact.name == values["name"])
    )
    session.add(Artifact(**values))


def delete_with_artifacts(session: Session, job_id: str) -> list[str]:
    """Delete a job and its artifact rows; returns the storage keys those rows referred to."""
    keys = list(session.scalars(select(Artifact.storage_key).where(Artifact.job_id == job_id)))
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    return keys
