"""API keys: `mp_<key id>_<secret>`; only sha256(pepper || key) is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Unauthorized
from app.db.base import utcnow
from app.db.orm import Tenant
from app.db.orm.tenant import DEFAULT_TENANT
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
    row.last_used_at = utcnow()
    return row.tenant_id


def key_id_of(authorization: str) -> str:
    """The key id of an `Authorization` value that `authenticate` accepted."""
    return authorization.partition(" ")[2].split("_")[1]
