"""Per-key request rate limit (token bucket, in process memory)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from liveavatar.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `per_minute` requests per key on average, with bursts up to `burst`."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def check(self, key_id: int) -> None:
        """Take one token for `key_id`, or raise RateLimited."""
        now = self._clock()
        bucket = self._buckets.setdefault(key_id, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RateLimited
        bucket.tokens -= 1.0
