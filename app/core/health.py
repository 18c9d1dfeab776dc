"""Readiness checks: the database at the current schema, and the broker when there is one."""

from __future__ import annotations

from app.core.config import Settings
from app.db.migrate import is_at_head
from app.db.session import ping


def broker_ok(url: str) -> bool:
    """Whether the broker accepts a connection within about two seconds."""
    from kombu import Connection  # only a broker deployment pays for kombu

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


def readiness_checks(settings: Settings) -> dict[str, bool]:
    """Each dependency by name; `schema_at_head` is absent when the database is down."""
    checks: dict[str, bool] = {}
    try:
        ping()
        checks["database"] = True
        checks["schema_at_head"] = is_at_head(settings.resolved_database_url)
    except Exception:
        checks["database"] = False
    if settings.broker_url:
        checks["broker"] = broker_ok(settings.broker_url)
    return checks
