"""`/metrics` follows MODELPRESS_AUTH_REQUIRED unless MODELPRESS_METRICS_PUBLIC=true."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.auth import create_key
from app.core.config import get_settings
from app.db.session import session_scope
from app.main import create_app


@pytest.fixture
def make_client(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable]:
    clients: list[Any] = []

    def _make(**settings: str) -> Any:
        for name, value in settings.items():
            monkeypatch.setenv(f"MODELPRESS_{name.upper()}", value)
        get_settings.cache_clear()
        client = TestClient(create_app()).__enter__()
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


def test_with_auth_off_metrics_are_open(make_client: Callable) -> None:
    response = make_client().get("/metrics")

    assert response.status_code == 200
    assert "modelpress_jobs_total" in response.text


def test_with_auth_on_metrics_need_a_key(make_client: Callable) -> None:
    response = make_client(auth_required="true").get("/metrics")

    assert_problem(response, 401, "unauthorized")


def test_with_auth_on_a_valid_key_reads_metrics(make_client: Callable, env: dict[str, str]) -> None:
    client = make_client(auth_required="true")
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        key = create_key(session, "ops", get_settings())

    response = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 200
    assert "modelpress_jobs_total" in response.text


def test_metrics_public_opens_them_with_auth_on(make_client: Callable) -> None:
    client = make_client(auth_required="true", metrics_public="true")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert client.get("/v1/models").status_code == 401  # only /metrics opened
