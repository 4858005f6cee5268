"""The media timeline both the session and the transport use: audio constants and the session clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
VIDEO_FPS = 25
VIDEO_CLOCK = 90_000
VIDEO_TICKS = VIDEO_CLOCK // VIDEO_FPS


Timing = Callable[[str, float], None]
"""Reports how long a named stage of a turn took, in seconds (metrics; never blocks)."""


def untimed(_stage: str, _seconds: float) -> None:
    """A Timing that records nothing."""


class Clock(Protocol):
    """Session time in seconds: what the tracks pace on and what replies are scheduled against."""

    def now(self) -> float:
        """Seconds since the clock started (0 before it starts)."""
        ...

    def start(self) -> float:
        """Start the clock if it is not running; returns its origin."""
        ...

    async def wait_until(self, t: float) -> None:
        """Sleep until session time `t` (returns at once when late)."""
        ...


class MediaClock:
    """The session clock on the event loop's time: t = 0 when the first frame is handed out."""

    def __init__(self) -> None:
        self._origin: float | None = None

    def now(self) -> float:
        """Seconds since the clock started (0 before it starts)."""
        if self._origin is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._origin

    def start(self) -> float:
        """Start the clock if it is not running; returns its origin in loop time."""
        if self._origin is None:
            self._origin = asyncio.get_running_loop().time()
        return self._origin

    async def wait_until(self, t: float) -> None:
        """Sleep until session time `t` (returns at once when late)."""
        delay = self.start() + t - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)


class UnpacedClock:
    """A clock that is always late: every frame is due at once (a track pulled as fast as it can be drawn)."""

    def now(self) -> float:
        """Always the start."""
        return 0.0

    def start(self) -> float:
        """Unpaced clocks start at 0."""
        return 0.0

    async def wait_until(self, t: float) -> None:
        """Returns at once."""


class ScriptedClock:
    """A clock that moves only when told (`advance`): replies run on it deterministically in tests and tools."""

    def __init__(self) -> None:
        self._now = 0.0
        self._moved = asyncio.Condition()

    def now(self) -> float:
        """The scripted time."""
        return self._now

    def start(self) -> float:
        """Scripted clocks start at 0."""
        return 0.0

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every waiter whose time has come run."""
        async with self._moved:
            self._now += seconds
            self._moved.notify_all()
        await asyncio.sleep(0)

    async def wait_until(self, t: float) -> None:
        """Wait until the scripted time reaches `t`."""
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= t)
