"""FastAPI dependencies: the request's session, settings, storage and tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.core.auth import authenticate, default_tenant_id, key_id_of
from app.core.config import Settings, get_settings
from app.core.errors import TooManyRequests, Unauthorized
from app.core.storage import Storage, get_storage
from app.db.session import get_sessionmaker


def _session() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()  # routers commit what they mean to keep; anything else is dropped
        session.close()


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _storage(settings: SettingsDep) -> Storage:
    return get_storage(settings)


StorageDep = Annotated[Storage, Depends(_storage)]


def _limit(request: Request, caller: str) -> None:
    """Count the request against the caller's per-minute budget (app.state.rate_limiter)."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    retry_after = limiter.hit(caller) if limiter is not None else None
    if retry_after is not None:
        raise TooManyRequests(
            "Too many requests for this API key (MODELPRESS_RATE_LIMIT_PER_MINUTE); "
            f"retry in {retry_after} s.",
            retry_after=retry_after,
            code="rate_limited",
        )


def _address(request: Request) -> str:
    return "addr:" + (request.client.host if request.client else "unknown")


def _tenant(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    if not settings.auth_required:
        _limit(request, _address(request))
        tenant_id = default_tenant_id(session)
    else:
        try:
            tenant_id = authenticate(session, authorization, settings)
        except Unauthorized:
            _limit(request, _address(request))  # key guessing is limited by address
            raise
        _limit(request, "key:" + key_id_of(authorization or ""))
    session.commit()
    return tenant_id


CurrentTenant = Annotated[str, Depends(_tenant)]


def _metrics_access(
    session: SessionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """`/metrics` needs a key when auth is on, unless MODELPRESS_METRICS_PUBLIC=true."""
    if settings.auth_required and not settings.metrics_public:
        authenticate(session, authorization, settings)
        session.commit()


MetricsAccess = Depends(_metrics_access)
