"""Every read of `artifact`; each takes the tenant (the worker writes rows through app.jobs)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.orm import Artifact


def get(session: Session, tenant_id: str, job_id: str, name: str) -> Artifact | None:
    """The artifact `name` of a job, if the tenant owns it."""
    stmt = select(Artifact).where(
        Artifact.tenant_id == tenant_id, Artifact.job_id == job_id, Artifact.name == name
    )
    return session.scalars(stmt).first()


def list_by_job(session: Session, tenant_id: str, job_ids: list[str]) -> dict[str, list[Artifact]]:
    """The artifacts of each job by name (an empty list for a job that has none)."""
    out: dict[str, list[Artifact]] = {j: [] for j in job_ids}
    if job_ids:
        stmt = (
            select(Artifact)
            .where(Artifact.tenant_id == tenant_id, Artifact.job_id.in_(job_ids))
            .order_by(Artifact.name)
        )
        for art in session.scalars(stmt):
            out[art.job_id].append(art)
    return out
