"""The session host: owns the live sessions of one process (capacity, deadlines, closing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from liveavatar.errors import Busy
from liveavatar.store import Store
from liveavatar.store.sessions import Status

log = logging.getLogger(__name__)


@dataclass
class LiveSession:
    """A session this process holds: from create until it is closed."""

    session_id: str
    owner_id: int
    deadline: float
    """Event-loop time at which the session's duration runs out."""
    expiry: asyncio.Task[None] | None = field(default=None, repr=False)


class SessionHost:
    """Holds up to `capacity` live sessions; closes each one when its duration ends."""

    def __init__(self, store: Store, capacity: int) -> None:
        self._store = store
        self.capacity = capacity
        self._live: dict[str, LiveSession] = {}
        self._reserved = 0
        self._closing = False

    @property
    def live_count(self) -> int:
        """Sessions held now, including those being created."""
        return len(self._live) + self._reserved

    async def start(self) -> None:
        """Mark sessions a previous, dead server left live as failed."""
        failed = await self._store.sessions.fail_orphans("server restarted while the session was live")
        if failed:
            log.warning("marked %d session(s) left live by a previous server as failed", failed)

    @contextlib.asynccontextmanager
    async def reservation(self) -> AsyncIterator[None]:
        """Hold one unit of capacity while a session is being created; 1215 when full."""
        if self._closing or self.live_count >= self.capacity:
            raise Busy
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    def open(self, session_id: str, owner_id: int, duration: float) -> LiveSession:
        """Start holding a created session; it closes itself after `duration` seconds."""
        loop = asyncio.get_running_loop()
        live = LiveSession(session_id, owner_id, loop.time() + duration)
        live.expiry = asyncio.create_task(self._expire(live), name=f"session-expiry-{session_id}")
        self._live[session_id] = live
        return live

    def get(self, session_id: str) -> LiveSession | None:
        """The live session with this id."""
        return self._live.get(session_id)

    async def _expire(self, live: LiveSession) -> None:
        try:
            await asyncio.sleep(max(0.0, live.deadline - asyncio.get_running_loop().time()))
            await self.close(live.session_id, Status.CLOSED, "duration elapsed")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("closing expired session %s failed", live.session_id)

    async def close(self, session_id: str, status: Status, reason: str) -> None:
        """End a live session (idempotent) and record how it ended."""
        live = self._live.pop(session_id, None)
        if live is not None and live.expiry is not None and live.expiry is not asyncio.current_task():
            live.expiry.cancel()
        await self._store.sessions.set_status(session_id, status, reason)

    async def aclose(self) -> None:
        """Server shutdown: end every live session, recorded as failed."""
        self._closing = True
        for session_id in list(self._live):
            await self.close(session_id, Status.FAILED, "server shut down")
