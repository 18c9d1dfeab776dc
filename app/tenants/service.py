"""The rules of tenants: storage quota, active-jobs limit, listing and revoking API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFound, QuotaExceeded, TooManyRequests
from app.db.base import utcnow
from app.db.orm import ApiKey
from app.tenants import repository

# A job takes seconds to hours: a client told to wait this long polls its jobs meanwhile.
ACTIVE_JOBS_RETRY_AFTER = 30


def storage_usage(session: Session, settings: Settings, tenant_id: str) -> tuple[int, int] | None:
    """(bytes used, quota) of the tenant, None without a quota."""
    quota = settings.storage_quota_bytes
    if quota is None:
        return None
    return repository.storage_used(session, tenant_id), quota


def check_storage(session: Session, settings: Settings, tenant_id: str, incoming: int) -> None:
    """Refuse `incoming` more bytes over the quota, under the tenant's lock: two uploads that
    each fit but not together cannot both pass (the lock holds until the request commits).

    Raises:
        QuotaExceeded: used + incoming > quota.
    """
    if settings.storage_quota_bytes is None:
        return
    repository.lock(session, tenant_id)
    used, quota = repository.storage_used(session, tenant_id), settings.storage_quota_bytes
    if used + incoming > quota:
        raise over_quota(used, quota, f"this upload needs {incoming}")


def over_quota(used: int, quota: int, needs: str | None = None) -> QuotaExceeded:
    """The 403 `quota_exceeded` problem, saying how much is used and allowed."""
    asked = f" and {needs} bytes" if needs else ""
    return QuotaExceeded(
        f"The tenant stores {used} of its {quota} bytes{asked}; delete models, datasets or "
        "jobs to make room (MODELPRESS_TENANT_STORAGE_BYTES).",
        used_bytes=used,
        quota_bytes=quota,
    )


def check_can_submit(session: Session, settings: Settings, tenant_id: str) -> None:
    """A new job needs room under the active-jobs limit and storage for its artifacts.

    Raises:
        TooManyRequests: `too_many_active_jobs`, with `Retry-After`.
        QuotaExceeded: the tenant's storage is full.
    """
    limit = settings.tenant_max_active_jobs
    if limit:
        repository.lock(session, tenant_id)
        active = repository.active_jobs(session, tenant_id)
        if active >= limit:
            raise TooManyRequests(
                f"The tenant has {active} queued or running jobs, the most allowed "
                f"(MODELPRESS_TENANT_MAX_ACTIVE_JOBS={limit}); retry once one finishes.",
                retry_after=ACTIVE_JOBS_RETRY_AFTER,
                code="too_many_active_jobs",
            )
    usage = storage_usage(session, settings, tenant_id)
    if usage is not None and usage[0] >= usage[1]:
        raise over_quota(*usage)


@dataclass(frozen=True)
class KeyInfo:
    """What an operator may see of a key: never its secret or its hash."""

    id: str
    prefix: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _info(key: ApiKey, tenant: str) -> KeyInfo:
    return KeyInfo(
        key.id, f"mp_{key.key_id}", tenant, key.created_at, key.last_used_at, key.revoked_at
    )


def list_keys(session: Session, tenant_name: str | None = None) -> list[KeyInfo]:
    """Every key (or one tenant's), oldest first."""
    return [_info(key, name) for key, name in repository.list_keys(session, tenant_name)]


def key_reference(ref: str) -> str:
    """`mp_<key id>`, `mp_<key id>_<secret>` or a bare key id / row id: the part to look up."""
    parts = ref.strip().split("_")
    return parts[1] if len(parts) >= 2 and parts[0] == "mp" else ref.strip()


def revoke_key(session: Session, ref: str) -> tuple[KeyInfo, bool]:
    """Revoke a key at once (authentication reads the flag on every request); returns the key
    and whether this call revoked it (False: it already was).

    Raises:
        NotFound: no key has this prefix or id.
    """
    found = repository.find_key(session, key_reference(ref))
    if found is None:
        raise NotFound(f"No API key {ref!r}.")
    key, tenant = found
    revoked = repository.revoke(session, key.id, utcnow())
    session.refresh(key)
    return _info(key, tenant), revoked
