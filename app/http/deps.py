"""FastAPI dependencies: the request's session, settings, storage and tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.core.auth import authenticate, default_tenant_id
from app.core.config import Settings, get_settings
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


def _tenant(
    session: SessionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    if not settings.auth_required:
        tenant_id = default_tenant_id(session)
    else:
        tenant_id = authenticate(session, authorization, settings)
    session.commit()
    return tenant_id


CurrentTenant = Annotated[str, Depends(_tenant)]
