"""The per-minute window, in the process and shared through Redis (TEST_REDIS_URL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from support import is_service_setting

from app.core.config import Settings
from app.core.ratelimit import (
    MemoryRateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
)


class Clock:
    """A settable time, at the start of a minute."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set")
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    import redis

    name = f"modelpress-test:{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


def test_memory_limiter_allows_the_limit_then_says_when_to_retry() -> None:
    clock = Clock()
    clock.now += 15
    limiter = MemoryRateLimiter(3, clock)

    results = [limiter.hit("key:a") for _ in range(4)]

    assert results == [None, None, None, 45]


def test_memory_limiter_counts_each_caller_apart() -> None:
    limiter = MemoryRateLimiter(1, Clock())

    assert (limiter.hit("key:a"), limiter.hit("key:b")) == (None, None)
    assert limiter.hit("key:a") is not None


def test_memory_limiter_recovers_in_the_next_minute() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(1, clock)
    limiter.hit("key:a")
    assert limiter.hit("key:a") == 60

    clock.now += 60

    assert limiter.hit("key:a") is None


def test_redis_limiter_shares_the_count_between_processes(redis_url: str, prefix: str) -> None:
    """Two limiters (two API processes) on one Redis: the second sees the first's requests."""
    clock = Clock()
    first = RedisRateLimiter(redis_url, 3, prefix, clock)
    second = RedisRateLimiter(redis_url, 3, prefix, clock)

    results = [first.hit("key:a"), second.hit("key:a"), first.hit("key:a"), second.hit("key:a")]

    assert results == [None, None, None, 60]


def test_redis_limiter_keys_expire_and_the_next_minute_recovers(
    redis_url: str, prefix: str
) -> None:
    import redis

    clock = Clock()
    limiter = RedisRateLimiter(redis_url, 1, prefix, clock)
    limiter.hit("key:a")
    assert limiter.hit("key:a") is not None
    keys = list(redis.Redis.from_url(redis_url).scan_iter(f"{prefix}:*"))

    clock.now += 60

    assert limiter.hit("key:a") is None
    assert all(0 < redis.Redis.from_url(redis_url).ttl(k) <= 120 for k in keys)


def test_redis_down_falls_back_to_counting_in_the_process() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 1, "modelpress-test", Clock())

    assert (limiter.hit("key:a"), limiter.hit("key:a") is not None) == (None, True)


def test_the_settings_choose_the_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if is_service_setting(k)]:
        monkeypatch.delenv(key)

    assert build_rate_limiter(Settings(rate_limit_per_minute=0)) is None
    assert isinstance(build_rate_limiter(Settings()), MemoryRateLimiter)
    redis_backed = build_rate_limiter(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert isinstance(redis_backed, RedisRateLimiter)
    assert Settings().rate_limit_per_minute == 600
