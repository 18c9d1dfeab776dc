"""The Alembic chain on fresh databases: round trip, no drift, head detection (DUR-02, DUR-03).

SQLite gets a new file; Postgres (where TEST_DATABASE_URL is set) gets a private schema through
`search_path`, so the session's migrated `public` schema used by the other tests is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import app.db.orm  # noqa: F401  (registers every table on Base.metadata)
from app.db.base import Base
from app.db.migrate import alembic_config, is_at_head, upgrade_head
from app.db.session import build_engine

SCHEMA = "modelpress_migtest"
APP_TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(url: str) -> set[str]:
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = build_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _pg_schema(base_url: str, statement: str) -> None:
    engine = build_engine(base_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (a private Postgres schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("TEST_DATABASE_URL is not set")
    _pg_schema(base, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    _pg_schema(base, f"CREATE SCHEMA {SCHEMA}")
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{SCHEMA}"
    finally:
        _pg_schema(base, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def test_fresh_database_starts_empty(fresh_url: str) -> None:
    tables = _tables(fresh_url)

    at_head = is_at_head(fresh_url)

    assert tables == set()
    assert at_head is False


def test_upgrade_creates_every_table(fresh_url: str) -> None:
    upgrade_head(fresh_url)

    tables = _tables(fresh_url)

    assert tables == APP_TABLES | {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trip(fresh_url: str) -> None:
    """DUR-03: the chain runs up, all the way down, and up again on a fresh database."""
    upgrade_head(fresh_url)

    command.downgrade(alembic_config(fresh_url), "base")
    after_downgrade = _tables(fresh_url)
    upgrade_head(fresh_url)

    assert after_downgrade & APP_TABLES == set()
    assert _tables(fresh_url) == APP_TABLES | {"alembic_version"}
    assert _drift(fresh_url) == []


def test_autogenerate_finds_no_drift_after_upgrade(fresh_url: str) -> None:
    """DUR-03: the migrations build exactly the schema the ORM declares."""
    upgrade_head(fresh_url)

    drift = _drift(fresh_url)

    assert drift == []


def test_is_at_head_after_upgrade(fresh_url: str) -> None:
    """DUR-02: readiness sees a migrated schema as current."""
    upgrade_head(fresh_url)

    at_head = is_at_head(fresh_url)

    assert at_head is True


def test_is_not_at_head_after_downgrade(fresh_url: str) -> None:
    """DUR-02: a schema behind head is reported as such (the API refuses to serve on it)."""
    upgrade_head(fresh_url)

    command.downgrade(alembic_config(fresh_url), "base")

    assert is_at_head(fresh_url) is False


def test_upgrade_head_twice_is_a_no_op(fresh_url: str) -> None:
    """A second `migrate` (another replica starting) finds the schema at head: no change."""
    upgrade_head(fresh_url)

    upgrade_head(fresh_url)

    assert is_at_head(fresh_url) is True
    assert _tables(fresh_url) == APP_TABLES | {"alembic_version"}
