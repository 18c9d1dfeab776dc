"""Every query on `tenant` and `api_key`, and the sums behind a tenant's quotas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.orm import ApiKey, Artifact, Dataset, Job, JobStatus, MlModel, ModelStatus, Tenant

ACTIVE_STATUSES = (JobStatus.queued, JobStatus.running)


def get_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).first()


def add(session: Session, name: str) -> Tenant:
    """Insert the tenant; when a concurrent request inserted it first, return that one."""
    tenant = Tenant(name=name)
    try:
        with session.begin_nested():
            session.add(tenant)
    except IntegrityError:
        existing = get_by_name(session, name)
        if existing is None:
            raise
        return existing
    return tenant


def lock(session: Session, tenant_id: str) -> None:
    """Hold the tenant's row until commit (Postgres `FOR UPDATE`; SQLite's IMMEDIATE
    transactions already serialize writers): quota checks of one tenant run one at a time."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def storage_used(session: Session, tenant_id: str) -> int:
    """Bytes the tenant holds: models (not rejected: their bytes are dropped), datasets and the
    artifacts of its jobs, leaving out what retention expired."""
    models = select(func.coalesce(func.sum(MlModel.size_bytes), 0)).where(
        MlModel.tenant_id == tenant_id,
        MlModel.expired_at.is_(None),
        MlModel.status != ModelStatus.rejected,
    )
    datasets = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.tenant_id == tenant_id, Dataset.expired_at.is_(None)
    )
    artifacts = (
        select(func.coalesce(func.sum(Artifact.size_bytes), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Artifact.tenant_id == tenant_id, Job.expired_at.is_(None))
    )
    return sum(int(session.scalar(stmt) or 0) for stmt in (models, datasets, artifacts))


def active_jobs(session: Session, tenant_id: str) -> int:
    """The tenant's queued and running jobs."""
    stmt = select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
    return int(session.scalar(stmt) or 0)


def add_key(session: Session, tenant_id: str, key_id: str, key_hash: str) -> ApiKey:
    key = ApiKey(tenant_id=tenant_id, key_id=key_id, key_hash=key_hash)
    session.add(key)
    session.flush()
    return key


def key_by_key_id(session: Session, key_id: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).first()


def find_key(session: Session, ref: str) -> tuple[ApiKey, str] | None:
    """A key and its tenant's name, by public key id or row id (an operator's lookup, over
    every tenant)."""
    stmt = (
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where((ApiKey.key_id == ref) | (ApiKey.id == ref))
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def list_keys(session: Session, tenant_name: str | None) -> list[tuple[ApiKey, str]]:
    """Every key with its tenant's name, oldest first (optionally of one tenant)."""
    stmt = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    rows = session.execute(stmt.order_by(ApiKey.created_at, ApiKey.id))
    return [(key, name) for key, name in rows]


def revoke(session: Session, key_row_id: str, now: datetime) -> bool:
    """Mark a key revoked unless it already is; True when this call revoked it."""
    stmt = (
        update(ApiKey)
        .where(ApiKey.id == key_row_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now, updated_at=now)
    )
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
