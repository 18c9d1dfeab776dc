"""Readiness checks: the database at the current schema, and the broker when there is one.

Each check reuses what the process already holds: the cached engine's pool (no engine per
request) and the migration scripts' head revisions, read once per process.
"""

from __future__ import annotations

from functools import lru_cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.core.config import Settings
from app.db.migrate import alembic_config
from app.db.session import get_engine, ping


def broker_ok(url: str) -> bool:
    """Whether the broker accepts a connection within about two seconds."""
    from kombu import Connection  # only a broker deployment pays for kombu

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@lru_cache(maxsize=8)
def head_revisions(url: str) -> frozenset[str]:
    """The head revisions of the packaged migrations (they do not change while we run)."""
    return frozenset(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def schema_at_head(url: str) -> bool:
    """Whether the database's schema is at the newest revision, read on the cached engine."""
    with get_engine(url).connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == head_revisions(url)


def readiness_checks(settings: Settings) -> dict[str, bool]:
    """Each dependency by name; `schema_at_head` is absent when the database is down."""
    checks: dict[str, bool] = {}
    url = settings.resolved_database_url
    try:
        ping(url)
        checks["database"] = True
        checks["schema_at_head"] = schema_at_head(url)
    except Exception:
        checks["database"] = False
    if settings.broker_url:
        checks["broker"] = broker_ok(settings.broker_url)
    return checks
