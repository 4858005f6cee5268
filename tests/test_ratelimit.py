"""The per-key token bucket, on an injected clock."""

from __future__ import annotations

import pytest

from liveavatar.errors import RateLimited
from liveavatar.ratelimit import RateLimiter


def test_a_burst_then_the_average_rate_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check(1)
    with pytest.raises(RateLimited):
        limiter.check(1)
    limiter.check(2)  # another key has its own bucket
    now[0] += 0.9
    with pytest.raises(RateLimited):
        limiter.check(1)  # one token a second: not yet
    now[0] += 0.2
    limiter.check(1)
    now[0] += 3600
    for _ in range(3):  # a long pause refills to the burst, not beyond
        limiter.check(1)
    with pytest.raises(RateLimited):
        limiter.check(1)
