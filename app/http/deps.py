"""FastAPI dependencies: the request's session, settings, storage and tenant."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Header, Request
from sqlalchemy.orm import Session

from app.core.auth import authenticate, default_tenant_id, key_id_of, last_used, record_use
from app.core.config import Settings, get_settings
from app.core.errors import TooManyRequests, Unauthorized
from app.core.storage import Storage, get_storage
from app.db.session import read_sessionmaker, request_session

log = logging.getLogger(__name__)
# Requests that only read: their session's transactions begin deferred (on SQLite they take no
# lock, so they neither wait for the worker nor for each other). A write on such a path still
# works: it runs in a write transaction of its own (app/db/session.py).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def limit_sessions(state: Any, settings: Settings) -> int | None:
    """Admit at most MODELPRESS_DB_POOL_SIZE requests with a database session at a time where
    the pool is bounded (Postgres); the rest wait in the event loop, at no cost.

    A sync route returns, then FastAPI validates its response in a thread while its session
    still holds the connection of its last read. Under a burst every thread could be waiting for
    a connection held by a request that waits for a thread (until the pool's 30 s timeout).
    With this many sessions, the pool (as many again for overflow) always has a connection for
    the threads. SQLite's connections have no cap: no limit there."""
    if settings.resolved_database_url.startswith("sqlite"):
        state.db_sessions = None
        return None
    state.db_sessions = asyncio.Semaphore(settings.db_pool_size)
    return settings.db_pool_size


async def _session(request: Request) -> AsyncIterator[Session]:
    slots: asyncio.Semaphore | None = getattr(request.app.state, "db_sessions", None)
    # A write request's session reads only after its commit (app/db/session.py RequestSession).
    read = request.method in READ_METHODS
    session = read_sessionmaker()() if read else request_session()
    if slots is not None:
        await slots.acquire()
        loop = asyncio.get_running_loop()
        # Closed here or by the route (a stream closes it before streaming), in any thread.
        session.info["on_close"] = lambda: loop.call_soon_threadsafe(slots.release)
    try:
        yield session
    finally:
        # Here, in the event loop, not in a thread (a sync teardown would wait for a thread
        # while holding its connection).
        try:
            session.rollback()  # routers commit what they mean to keep; the rest is dropped
        finally:
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


def _record_use(key_id: str) -> None:
    """`last_used_at`, after the response: a failure to write it fails no request."""
    try:
        record_use(key_id)
    except Exception:
        log.warning("could not record the use of API key %s", key_id, exc_info=True)


def _authenticate(
    session: Session, authorization: str | None, settings: Settings, background: BackgroundTasks
) -> str:
    """The key's tenant; its `last_used_at` is written after the response, once a minute."""
    tenant_id = authenticate(session, authorization, settings)
    key_id = key_id_of(authorization or "")
    if last_used.due(key_id):
        background.add_task(_record_use, key_id)
    return tenant_id


def _tenant(
    request: Request,
    settings: SettingsDep,
    background: BackgroundTasks,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    # A read session of its own, for POSTs too: looking the caller up takes no write lock, and
    # the route's own transaction starts after it (the tenant is returned by id).
    with read_sessionmaker()() as session:
        if not settings.auth_required:
            _limit(request, _address(request))
            tenant_id = default_tenant_id(session)  # created (a write) on first use only
        else:
            try:
                tenant_id = _authenticate(session, authorization, settings, background)
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
    background: BackgroundTasks,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """`/metrics` needs a key when auth is on, unless MODELPRESS_METRICS_PUBLIC=true."""
    if settings.auth_required and not settings.metrics_public:
        _authenticate(session, authorization, settings, background)
        session.commit()


MetricsAccess = Depends(_metrics_access)
