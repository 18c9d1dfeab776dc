"""MODELPRESS_RATE_LIMIT_PER_MINUTE on `/v1`: 429 + Retry-After, per key, shared through Redis
by several API processes; `/healthz` and `/readyz` are never limited (API-09)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import assert_problem

from app.core.auth import create_key
from app.core.config import get_settings
from app.core.ratelimit import RedisRateLimiter
from app.db.session import session_scope
from app.main import create_app

LIMIT = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # the start of a minute

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _app(clock: Clock) -> Any:
    app = create_app()
    app.state.rate_limiter.clock = clock
    return app


@pytest.fixture
def limited(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[Any]:
    monkeypatch.setenv("MODELPRESS_RATE_LIMIT_PER_MINUTE", str(LIMIT))
    get_settings.cache_clear()
    with TestClient(_app(clock)) as client:
        yield client


@pytest.fixture
def limited_auth(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> Iterator[Any]:
    monkeypatch.setenv("MODELPRESS_RATE_LIMIT_PER_MINUTE", str(LIMIT))
    monkeypatch.setenv("MODELPRESS_AUTH_REQUIRED", "true")
    get_settings.cache_clear()
    with TestClient(_app(clock)) as client:
        yield client


def _keys(env: dict[str, str]) -> dict[str, dict[str, str]]:
    with session_scope(env["MODELPRESS_DATABASE_URL"]) as session:
        keys = {t: create_key(session, f"tenant-{t}", get_settings()) for t in ("a", "b")}
    return {t: {"Authorization": f"Bearer {k}"} for t, k in keys.items()}


def test_past_the_limit_is_429_with_retry_after(limited: Any, clock: Clock) -> None:
    clock.now += 20
    assert [limited.get("/v1/models").status_code for _ in range(LIMIT)] == [200] * LIMIT

    response = limited.get("/v1/models")

    body = assert_problem(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "40"
    assert body["retry_after"] == 40


def test_the_next_minute_recovers(limited: Any, clock: Clock) -> None:
    for _ in range(LIMIT + 1):
        limited.get("/v1/models")
    assert limited.get("/v1/models").status_code == 429

    clock.now += 60

    assert limited.get("/v1/models").status_code == 200


def test_health_and_readiness_are_never_limited(limited: Any) -> None:
    for _ in range(LIMIT + 1):
        limited.get("/v1/models")

    statuses = [limited.get(path).status_code for path in ("/healthz", "/readyz") * LIMIT]

    assert statuses == [200] * (2 * LIMIT)


def test_each_key_has_its_own_budget(limited_auth: Any, env: dict[str, str]) -> None:
    headers = _keys(env)
    for _ in range(LIMIT):
        limited_auth.get("/v1/models", headers=headers["a"])
    assert limited_auth.get("/v1/models", headers=headers["a"]).status_code == 429

    response = limited_auth.get("/v1/models", headers=headers["b"])

    assert response.status_code == 200


def test_guessing_keys_is_limited_by_address(limited_auth: Any) -> None:
    bad = {"Authorization": "Bearer mp_0123456789abcdef_" + "x" * 43}
    statuses = [limited_auth.get("/v1/models", headers=bad).status_code for _ in range(LIMIT)]

    response = limited_auth.get("/v1/models", headers=bad)

    assert statuses == [401] * LIMIT
    assert_problem(response, 429, "rate_limited")
    assert "retry-after" in response.headers


def test_two_api_processes_share_the_limit_through_redis(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """With a broker, the count lives in Redis: requests to either app draw on one budget."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set")
    import redis

    monkeypatch.setenv("MODELPRESS_BROKER_URL", url)
    monkeypatch.setenv("MODELPRESS_RATE_LIMIT_PER_MINUTE", str(LIMIT))
    get_settings.cache_clear()
    prefix = f"modelpress-test:{uuid.uuid4().hex}"
    apps = [_app(clock), _app(clock)]
    for app in apps:
        assert isinstance(app.state.rate_limiter, RedisRateLimiter)
        app.state.rate_limiter.prefix = prefix
    try:
        with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
            statuses = [c.get("/v1/models").status_code for c in (first, second) * 2]
            recovered_before = second.get("/v1/models").status_code
            clock.now += 60
            recovered = first.get("/v1/models").status_code
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)

    assert statuses == [200, 200, 200, 429]
    assert (recovered_before, recovered) == (429, 200)
