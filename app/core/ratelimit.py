"""Per-caller request limits: a fixed one-minute window, counted in Redis when the deployment
has one (several API processes share the count) and in the process otherwise.

A caller is `key:<key id>` with auth on, `addr:<client address>` with auth off (and for
requests whose key was refused). The window is fixed: a caller may burst up to twice the limit
across a minute boundary, never more; `Retry-After` is the time to the next window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from app.core.config import Settings

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60
REDIS_PREFIX = "modelpress:ratelimit"
Clock = Callable[[], float]


class RateLimiter(Protocol):
    def hit(self, caller: str) -> int | None:
        """Count one request; None when allowed, else the seconds until it would be."""


def _retry_after(now: float) -> int:
    return max(1, math.ceil((math.floor(now / WINDOW_SECONDS) + 1) * WINDOW_SECONDS - now))


class MemoryRateLimiter:
    """One process's counts (the embedded mode has one API process)."""

    def __init__(self, limit: int, clock: Clock = time.time) -> None:
        self.limit, self.clock = limit, clock
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}

    def hit(self, caller: str) -> int | None:
        now = self.clock()
        window = math.floor(now / WINDOW_SECONDS)
        with self._lock:
            if window != self._window:  # a new minute: every count starts again
                self._window, self._counts = window, {}
            count = self._counts[caller] = self._counts.get(caller, 0) + 1
        return None if count <= self.limit else _retry_after(now)


class RedisRateLimiter:
    """Counts shared by every API process: INCR and EXPIRE of one key per caller and minute.

    Redis being down must not take the API with it: the count falls back to this process's.
    """

    def __init__(
        self, url: str, limit: int, prefix: str = REDIS_PREFIX, clock: Clock = time.time
    ) -> None:
        import redis

        self.limit, self.prefix, self.clock = limit, prefix, clock
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._fallback = MemoryRateLimiter(limit, clock)
        self._warned = -1

    def hit(self, caller: str) -> int | None:
        now = self.clock()
        key = f"{self.prefix}:{caller}:{math.floor(now / WINDOW_SECONDS)}"
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            count = int(pipe.execute()[0])
        except self._errors as exc:
            if self._warned != math.floor(now / WINDOW_SECONDS):  # once a minute, not per call
                self._warned = math.floor(now / WINDOW_SECONDS)
                log.warning("rate limit: Redis unavailable, counting in this process (%s)", exc)
            self._fallback.clock = self.clock
            return self._fallback.hit(caller)
        return None if count <= self.limit else _retry_after(now)


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter the settings ask for; None when MODELPRESS_RATE_LIMIT_PER_MINUTE is 0."""
    limit = settings.rate_limit_per_minute
    if not limit:
        return None
    url = settings.broker_url or ""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(url, limit)
    return MemoryRateLimiter(limit)
