"""The request's session and tenant: GET requests read without the SQLite write lock (and
still write where they must), and a key's use is recorded at most once a minute."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.core import auth
from app.core.auth import create_key
from app.core.config import get_settings
from app.db.orm import ApiKey, Tenant
from app.db.session import session_scope
from app.http.deps import limit_sessions
from app.main import create_app


@pytest.fixture
def auth_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    monkeypatch.setattr("app.http.deps.last_used", auth.LastUsed())  # this test's own throttle
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        yield test_client


def _lock_sqlite(url: str) -> sqlite3.Connection:
    """Another connection (the worker, say) holding the file's write lock until rolled back."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _sqlite_only(url: str) -> None:
    if not url.startswith("sqlite"):
        pytest.skip("the write lock is SQLite's")


def test_gets_answer_while_another_connection_holds_the_write_lock(
    client: Any, env: dict[str, str]
) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    _sqlite_only(url)
    assert client.get("/v1/jobs").status_code == 200  # the default tenant exists from here on
    lock = _lock_sqlite(url)
    try:
        responses = [client.get(p) for p in ("/v1/jobs?limit=20", "/v1/models", "/v1/datasets")]
        missing = client.get("/v1/jobs/00000000000000000000000000")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert missing.status_code == 404


def test_a_get_that_must_write_still_writes(client: Any, env: dict[str, str]) -> None:
    """The first request of an embedded install creates the default tenant, on a GET too."""
    url = env["MODELPRESS_DATABASE_URL"]
    response = client.get("/v1/jobs?limit=20")

    assert response.status_code == 200, response.text
    with session_scope(url) as session:
        assert session.scalars(select(Tenant.name)).all() == ["default"]


def _last_used(url: str) -> Any:
    with session_scope(url) as session:
        return session.scalars(select(ApiKey.last_used_at)).one()


def test_a_keys_use_is_recorded_once_a_minute(auth_client: Any, env: dict[str, str]) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    with session_scope(url) as session:
        key = create_key(session, "tenant-a", get_settings())
    headers = {"Authorization": f"Bearer {key}"}

    assert auth_client.get("/v1/jobs", headers=headers).status_code == 200
    first = _last_used(url)
    assert first is not None  # written after the response (the test client waits for it)
    with session_scope(url) as session:  # forget it: a second write would show
        session.execute(update(ApiKey).values(last_used_at=None))
    for _ in range(3):
        assert auth_client.get("/v1/jobs", headers=headers).status_code == 200
    assert _last_used(url) is None


def test_a_refused_key_records_nothing(auth_client: Any, env: dict[str, str]) -> None:
    url = env["MODELPRESS_DATABASE_URL"]
    with session_scope(url) as session:
        key = create_key(session, "tenant-a", get_settings())
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")

    assert (
        auth_client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    )
    assert _last_used(url) is None


def test_requests_hand_back_their_session_slot(client: Any) -> None:
    """Where sessions are limited (a bounded pool), each request's slot comes back, whether
    its route closed the session itself or the dependency did."""
    slots = asyncio.Semaphore(2)
    client.app.state.db_sessions = slots
    for path in ("/v1/jobs", "/v1/models", "/v1/jobs/00000000000000000000000000", "/v1/passes"):
        client.get(path)
    client.post("/v1/jobs", json={"model_id": "missing", "steps": [{"op": "quantize"}]})

    assert slots._value == 2


def test_sessions_are_limited_only_where_the_pool_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = SimpleNamespace()
    monkeypatch.setenv("MODELPRESS_DB_POOL_SIZE", "7")
    for url, expected in (("sqlite:////tmp/x.db", None), ("postgresql://u@h/db", 7)):
        monkeypatch.setenv("MODELPRESS_DATABASE_URL", url)
        get_settings.cache_clear()
        assert limit_sessions(state, get_settings()) == expected
        assert (state.db_sessions is None) is (expected is None)
    get_settings.cache_clear()
