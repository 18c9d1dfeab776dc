"""API keys: `mp_<key id>_<secret>`; only sha256(pepper || key) is stored.

A key's `last_used_at` says when it was last used to the minute, not to the request: it is
written at most once a minute per key, in a short write transaction of its own that the caller
runs after the response (`LastUsed.due` says when one is due), so that authenticating a read
never writes.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Unauthorized
from app.db.base import utcnow
from app.db.orm import ApiKey, Tenant
from app.db.orm.tenant import DEFAULT_TENANT
from app.db.session import session_scope
from app.tenants import repository


def hash_key(key: str, settings: Settings) -> str:
    pepper = settings.api_key_pepper.get_secret_value().encode()
    return hashlib.sha256(pepper + key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created on first use."""
    tenant = repository.get_by_name(session, name)
    return tenant if tenant is not None else repository.add(session, name)


def default_tenant_id(session: Session) -> str:
    """The tenant every request belongs to when auth is off."""
    return get_or_create_tenant(session, DEFAULT_TENANT).id


def create_key(session: Session, tenant_name: str, settings: Settings) -> str:
    """A new key for `tenant_name` (created if missing); the plaintext is returned once."""
    tenant = get_or_create_tenant(session, tenant_name)
    key_id = secrets.token_hex(8)
    key = f"mp_{key_id}_{secrets.token_urlsafe(32)}"
    repository.add_key(session, tenant.id, key_id, hash_key(key, settings))
    return key


def authenticate(session: Session, authorization: str | None, settings: Settings) -> str:
    """The tenant id of a bearer key.

    Raises:
        Unauthorized: missing, malformed, unknown or revoked key (one answer for all).
    """
    scheme, _, key = (authorization or "").partition(" ")
    parts = key.split("_")
    if scheme.lower() != "bearer" or len(parts) < 3 or parts[0] != "mp":
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    row = repository.key_by_key_id(session, parts[1])
    expected = row.key_hash if row is not None else hash_key("x", settings)
    ok = hmac.compare_digest(expected, hash_key(key, settings))
    if row is None or not ok or row.revoked_at is not None:
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    return row.tenant_id


def key_id_of(authorization: str) -> str:
    """The key id of an `Authorization` value that `authenticate` accepted."""
    return authorization.partition(" ")[2].split("_")[1]


LAST_USED_EVERY_SECONDS = 60


class LastUsed:
    """Which keys are due a `last_used_at` write: at most one per key per `every` seconds in
    this process (the write's own condition keeps several processes to about the same)."""

    def __init__(
        self, every: float = LAST_USED_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every, self.clock = every, clock
        self._lock = threading.Lock()
        self._written: dict[str, float] = {}

    def due(self, key_id: str) -> bool:
        """True once per key and period: the caller then writes it (`record_use`)."""
        now = self.clock()
        with self._lock:
            last = self._written.get(key_id)
            if last is not None and now - last < self.every:
                return False
            if len(self._written) > 100_000:  # keys of a long-running process: forget them all
                self._written.clear()
            self._written[key_id] = now
            return True


last_used = LastUsed()


def record_use(key_id: str, url: str | None = None, every: float = LAST_USED_EVERY_SECONDS) -> None:
    """Set the key's `last_used_at` to now unless another write of the last `every` seconds (of
    any process) already did."""
    now = utcnow()
    since = now - datetime.timedelta(seconds=every)
    stmt = (
        update(ApiKey)
        .where(ApiKey.key_id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < since))
        .values(last_used_at=now)
    )
    with session_scope(url) as session:
        session.execute(stmt)
