"""The session host: owns the live sessions of one process (capacity, deadlines, joining, closing).

Nothing here lives in module globals, so several hosts (worker processes, cluster nodes) can each run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from liveavatar.errors import Busy, NotFound, SessionClosed
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.render.motion import Motion
from liveavatar.render.renderer import Renderer
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.dialogue import Brain, Knowledge
from liveavatar.session.listening import Ears
from liveavatar.session.session import Session
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store import Store
from liveavatar.store.models import SessionRow
from liveavatar.store.sessions import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostLimits:
    """How many sessions a host holds and how long it waits for their clients."""

    capacity: int
    join_timeout: float
    """Seconds a created session waits for its first join (the join token's lifetime)."""
    rejoin_grace: float
    """Seconds a session waits for its client to come back after the connection dropped."""


class SessionHost:
    """Holds up to `capacity` live sessions; closes each when its duration ends or its client goes."""

    def __init__(
        self,
        store: Store,
        limits: HostLimits,
        *,
        avatars: AvatarRegistry,
        voices: VoiceRegistry,
        ice_servers: list[dict[str, Any]],
        allow_private_urls: bool = False,
        ears: Ears | None = None,
        brain: Brain | None = None,
    ) -> None:
        self._store = store
        self.limits = limits
        self._avatars = avatars
        self._voices = voices
        self._ice_servers = ice_servers
        self._allow_private_urls = allow_private_urls
        self._ears = ears
        self._brain = brain
        self._live: dict[str, Session] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._reserved = 0
        self._closing = False

    @property
    def capacity(self) -> int:
        """Live sessions this host holds at most."""
        return self.limits.capacity

    @property
    def live_count(self) -> int:
        """Sessions held now, including those being created."""
        return len(self._live) + self._reserved

    def stats(self) -> dict[str, int]:
        """Counters for health checks: sessions held, capacity, media frames received from clients."""
        sessions = list(self._live.values())
        return {
            "live_sessions": self.live_count,
            "capacity": self.capacity,
            "joined_sessions": sum(1 for s in sessions if s.joined),
            "inbound_audio_frames": sum(s.inbound_frames["audio"] for s in sessions),
            "inbound_video_frames": sum(s.inbound_frames["video"] for s in sessions),
        }

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

    async def open(self, row: SessionRow) -> Session:
        """Start holding a created session."""
        avatar = self._avatars.get(row.avatar_id)
        if avatar is None:
            raise NotFound(f"avatar {row.avatar_id!r} does not exist")
        knowledge = None
        if kb_id := row.params.get("knowledge_id"):
            kb = await self._store.knowledge.get(kb_id, row.owner_id)
            if kb is not None:
                knowledge = Knowledge(kb.id, kb.prompt, kb.prologue)
        session = Session(
            row.id,
            row.owner_id,
            SessionSettings.from_create(row.avatar_id, row.mode_type, row.params),
            source=AvatarSource(Renderer(self._avatars.pack(avatar.avatar_id)), Motion(seed=hash(row.id) & 0xFFFF)),
            voices=self._voices,
            allow_private_urls=self._allow_private_urls,
            ears=self._ears,
            brain=self._brain,
            knowledge=knowledge,
            ice_servers=self._ice_servers,
            rejoin_grace=self.limits.rejoin_grace,
            end=lambda status, reason: self._close_later(row.id, status, reason),
        )
        self._live[row.id] = session
        self._watchers[row.id] = asyncio.create_task(self._watch(session, row.duration), name=f"watch-{row.id}")
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, if this host holds it."""
        return self._live.get(session_id)

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Connect a client to a live session: offer in, answer out; the session turns live on first join."""
        session = self._live.get(session_id)
        if session is None:
            row = await self._store.sessions.get(session_id)
            if row is None:
                raise NotFound(f"session {session_id!r} does not exist")
            raise SessionClosed(f"session {session_id!r} has ended ({row.close_reason or 'closed'})")
        first = not session.joined
        answer = await session.join(offer_sdp)
        if first:
            await self._store.sessions.set_status(session_id, Status.LIVE)
        return answer

    async def _watch(self, session: Session, duration: float) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration
            join_wait = min(duration, self.limits.join_timeout)
            await asyncio.sleep(join_wait)
            if not session.joined and join_wait < duration:
                await self.close(session.session_id, Status.CLOSED, "nobody joined in time")
                return
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            await self.close(session.session_id, Status.CLOSED, "duration elapsed")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("watching session %s failed", session.session_id)

    def _close_later(self, session_id: str, status: Status, reason: str) -> None:
        task = asyncio.create_task(self.close(session_id, status, reason), name=f"close-{session_id}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close(self, session_id: str, status: Status, reason: str) -> None:
        """End a live session (idempotent): peer closed, tasks ended, how it ended recorded."""
        session = self._live.pop(session_id, None)
        watcher = self._watchers.pop(session_id, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        if session is not None:
            try:
                await session.aclose()
            except Exception:
                log.exception("closing session %s failed", session_id)
                status = Status.FAILED
        await self._store.sessions.set_status(session_id, status, reason)

    async def aclose(self) -> None:
        """Server shutdown: end every live session, recorded as failed."""
        self._closing = True
        await asyncio.gather(
            *(self.close(session_id, Status.FAILED, "server shut down") for session_id in list(self._live))
        )
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)
