"""Programmatic Alembic: `modelpress migrate`, migration at start, and the tests use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from app.db.session import build_engine


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` that finds the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_head(url: str) -> None:
    """Bring the database at `url` to the newest revision (safe to call concurrently on PG)."""
    command.upgrade(alembic_config(url), "head")


def is_at_head(url: str) -> bool:
    """Whether the schema at `url` is at the newest revision (readiness checks this)."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return current == set(script.get_heads())
