"""Readiness: the checks reuse the process's engine and the migrations' heads."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from app.core import health
from app.core.config import get_settings


def test_readyz_creates_no_engine_per_request(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/readyz").status_code == 200  # the first one may build what it caches
    created: list[object] = []
    real = sqlalchemy.create_engine

    def counting(*args: Any, **kwargs: Any) -> Any:
        created.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlalchemy, "create_engine", counting)
    monkeypatch.setattr("app.db.session.create_engine", counting)
    responses = [client.get("/readyz") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.json()["checks"]["schema_at_head"] is True for r in responses)
    assert created == []


def test_a_schema_behind_head_is_not_ready(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "head_revisions", lambda _url: frozenset({"9999"}))

    checks = health.readiness_checks(get_settings())

    assert checks == {"database": True, "schema_at_head": False}
