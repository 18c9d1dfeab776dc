"""The reads an MLflow run is built from: the finished job and its published artifacts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.orm import Artifact, Job


def job_view(session: Session, job_id: str) -> dict[str, Any] | None:
    """The job's columns as this transaction sees them (right after its terminal update)."""
    stmt = select(
        Job.id,
        Job.tenant_id,
        Job.model_id,
        Job.status,
        Job.spec,
        Job.error,
        Job.created_at,
        Job.started_at,
        Job.finished_at,
    ).where(Job.id == job_id)
    row = session.execute(stmt).mappings().first()
    return dict(row) if row else None


def artifacts(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's artifacts (name, kind, storage key, size, hash), by name."""
    stmt = (
        select(
            Artifact.name, Artifact.kind, Artifact.storage_key, Artifact.size_bytes, Artifact.sha256
        )
        .where(Artifact.job_id == job_id)
        .order_by(Artifact.name)
    )
    return [dict(row) for row in session.execute(stmt).mappings()]
