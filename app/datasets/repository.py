"""Every query on `dataset`, tenant-scoped."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import paginate
from app.db.orm import Dataset


def get(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    return session.scalars(stmt).first()


def list_page(session: Session, tenant_id: str, limit: int, cursor: str | None) -> list[Dataset]:
    stmt = paginate(
        select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.expired_at.is_(None)),
        Dataset,
        limit,
        cursor,
    )
    return list(session.scalars(stmt))
