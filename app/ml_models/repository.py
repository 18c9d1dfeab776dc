"""Every query on `ml_model`; each takes the tenant (no unscoped lookups)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.pagination import paginate
from app.db.base import utcnow
from app.db.orm import Job, MlModel, ModelStatus


def get(session: Session, tenant_id: str, model_id: str) -> MlModel | None:
    stmt = select(MlModel).where(MlModel.id == model_id, MlModel.tenant_id == tenant_id)
    return session.scalars(stmt).first()


def list_page(session: Session, tenant_id: str, limit: int, cursor: str | None) -> list[MlModel]:
    stmt = paginate(
        select(MlModel).where(MlModel.tenant_id == tenant_id, MlModel.expired_at.is_(None)),
        MlModel,
        limit,
        cursor,
    )
    return list(session.scalars(stmt))


def has_jobs(session: Session, model_id: str) -> bool:
    stmt = select(Job.id).where(Job.model_id == model_id).limit(1)
    return session.scalar(stmt) is not None


def validating_ids(session: Session, older_than: object | None = None) -> list[str]:
    stmt = select(MlModel.id).where(MlModel.status == ModelStatus.validating)
    if older_than is not None:
        stmt = stmt.where(MlModel.updated_at < older_than)
    return list(session.scalars(stmt.order_by(MlModel.created_at).limit(100)))


def get_any(session: Session, model_id: str) -> MlModel | None:
    """Worker-side lookup by id alone (the worker acts for whichever tenant owns the row)."""
    return session.get(MlModel, model_id)


def finish_inspection(session: Session, model_id: str, values: dict[str, object]) -> bool:
    """Store the inspection result if the model is still validating (a re-run is a no-op)."""
    stmt = (
        update(MlModel)
        .where(MlModel.id == model_id, MlModel.status == ModelStatus.validating)
        .values(**values, updated_at=utcnow())
    )
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def start_inspection(session: Session, model_id: str) -> int | None:
    """Count one more inspection attempt of a validating model; returns the count (None: the
    model is no longer validating)."""
    stmt = (
        update(MlModel)
        .where(MlModel.id == model_id, MlModel.status == ModelStatus.validating)
        .values(inspect_attempts=MlModel.inspect_attempts + 1, updated_at=utcnow())
        .returning(MlModel.inspect_attempts)
    )
    return session.execute(stmt).scalar_one_or_none()
