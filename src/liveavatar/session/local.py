"""The in-process session host: holds live sessions in the process it runs in (API process, worker, Ray actor).

Nothing here lives in module globals, so several hosts (worker processes, cluster nodes) can each run one.
It knows nothing of the database: what happens to its sessions leaves as events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from liveavatar.avatars.voice import matching_voice_id
from liveavatar.errors import NotFound, SessionClosed
from liveavatar.memory import hold_trims_while, quiet, release_memory
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.render.loop import renderer_for
from liveavatar.render.motion import Motion
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.dialogue import Brain, Knowledge
from liveavatar.session.host import (
    SHUTDOWN_REASON,
    HostEvent,
    HostStats,
    SessionEnded,
    SessionFailed,
    SessionJoined,
    SessionSpec,
    StageTimed,
)
from liveavatar.session.listening import Ears
from liveavatar.session.puppet import Puppet
from liveavatar.session.session import Session
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store.sessions import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostLimits:
    """How long a host waits for its sessions' clients."""

    join_timeout: float
    """Seconds a created session waits for its first join (the join token's lifetime)."""
    rejoin_grace: float
    """Seconds a session waits for its client to come back after the connection dropped."""


@dataclass(frozen=True)
class SessionKit:
    """What every session of a host shares: registries, the models loaded once per process, ICE set-up."""

    avatars: AvatarRegistry
    voices: VoiceRegistry
    ice_servers: list[dict[str, Any]]
    allow_private_urls: bool = False
    ears: Ears | None = None
    brain: Brain | None = None


def process_usage() -> tuple[float, int]:
    """This process's CPU seconds (user + system) and resident bytes."""
    times = os.times()
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return times.user + times.system, rss


class LocalHost:
    """Holds sessions in this process; closes each when its duration ends or its client goes."""

    def __init__(self, host_id: str, kit: SessionKit, limits: HostLimits) -> None:
        self.host_id = host_id
        self.kit = kit
        self.limits = limits
        self._live: dict[str, Session] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._events: asyncio.Queue[HostEvent | None] = asyncio.Queue()
        self._closing = False
        self._release_trims = hold_trims_while(self.speaking)

    def speaking(self) -> bool:
        """Whether any of this host's sessions has speech queued or playing."""
        return any(session.source.speaker.playback.busy for session in self._live.values())

    async def open(self, spec: SessionSpec) -> None:
        """Start holding a created session."""
        if self._closing:
            raise SessionClosed("this host is shutting down")
        kit = self.kit
        avatar = kit.avatars.get(spec.avatar_id, spec.owner_id)
        if avatar is None:
            raise NotFound(f"avatar {spec.avatar_id!r} does not exist")
        pack = await asyncio.to_thread(kit.avatars.pack, avatar.pack_key)
        knowledge = None
        if spec.knowledge is not None:
            knowledge = Knowledge(spec.knowledge.kb_id, spec.knowledge.prompt, spec.knowledge.prologue)
        session_id = spec.session_id
        motion = Motion(seed=hash(session_id) & 0xFFFF)
        # A client-rendered session has no renderer at all: the client draws the face from the stream.
        source = (
            Puppet(spec.avatar_id, pack.size, motion)
            if spec.params.get("render") == "client"
            else AvatarSource(renderer_for(pack), motion)
        )
        session = Session(
            session_id,
            spec.owner_id,
            replace(
                SessionSettings.from_create(spec.avatar_id, spec.mode_type, spec.params),
                avatar_voice_id=avatar.voice_id or matching_voice_id(kit.voices, avatar.gender),
            ),
            source=source,
            voices=kit.voices,
            allow_private_urls=kit.allow_private_urls,
            ears=kit.ears,
            brain=kit.brain,
            knowledge=knowledge,
            ice_servers=kit.ice_servers,
            rejoin_grace=self.limits.rejoin_grace,
            end=lambda status, reason: self._close_later(session_id, status, reason),
            timing=lambda stage, seconds: self._events.put_nowait(StageTimed(stage, seconds)),
        )
        self._live[session_id] = session
        watcher = asyncio.create_task(self._watch(session, spec.duration), name=f"watch-{session_id}")
        self._watchers[session_id] = watcher

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Connect a client to a live session: offer in, answer out; the first join is reported."""
        session = self._live.get(session_id)
        if session is None:
            raise SessionClosed(f"session {session_id!r} has ended")
        first = not session.joined
        answer = await session.join(offer_sdp)
        if first:
            self._events.put_nowait(SessionJoined(session_id))
        return answer

    async def close(self, session_id: str, reason: str) -> None:
        """End a session at the API's request (idempotent)."""
        await self._end(session_id, Status.CLOSED, reason)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """What was said in a live session, or None when this host does not hold it."""
        session = self._live.get(session_id)
        return None if session is None else session.transcript()

    async def stats(self) -> HostStats:
        """Sessions held, joined, media frames received from clients, and this process's CPU and memory."""
        sessions = list(self._live.values())
        cpu, rss = process_usage()
        return HostStats(
            host_id=self.host_id,
            node=socket.gethostname(),
            pid=os.getpid(),
            live_sessions=len(sessions),
            joined_sessions=sum(1 for s in sessions if s.joined),
            inbound_audio_frames=sum(s.inbound_frames["audio"] for s in sessions),
            inbound_video_frames=sum(s.inbound_frames["video"] for s in sessions),
            cpu_seconds=cpu,
            rss_bytes=rss,
        )

    async def events(self) -> AsyncIterator[HostEvent]:
        """Status events of this host's sessions until the host is closed."""
        while (event := await self._events.get()) is not None:
            yield event

    async def _watch(self, session: Session, duration: float) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration
            join_wait = min(duration, self.limits.join_timeout)
            await asyncio.sleep(join_wait)
            if not session.joined and join_wait < duration:
                await self._end(session.session_id, Status.CLOSED, "nobody joined in time")
                return
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            await self._end(session.session_id, Status.CLOSED, "duration elapsed")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("watching session %s failed", session.session_id)

    def _close_later(self, session_id: str, status: Status, reason: str) -> None:
        task = asyncio.create_task(self._end(session_id, status, reason), name=f"close-{session_id}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _end(self, session_id: str, status: Status, reason: str) -> None:
        """Peer closed, tasks ended, how it ended reported (once per session)."""
        session = self._live.pop(session_id, None)
        if session is None:
            return
        watcher = self._watchers.pop(session_id, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        try:
            await session.aclose()
        except Exception:
            log.exception("closing session %s failed", session_id)
            status, reason = Status.FAILED, "closing the session failed"
        event = SessionFailed(session_id, reason) if status == Status.FAILED else SessionEnded(session_id, reason)
        self._events.put_nowait(event)
        # The session's peer and renderer are reference cycles: free them now, not at some distant full
        # collection, and give the pages back (liveavatar.memory has the measurements).
        del session
        await asyncio.to_thread(release_memory, quiet())

    async def aclose(self) -> None:
        """Shutdown: end every live session, each reported as failed, then end the event stream."""
        self._closing = True
        await asyncio.gather(*(self._end(sid, Status.FAILED, SHUTDOWN_REASON) for sid in list(self._live)))
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)
        self._release_trims()
        self._events.put_nowait(None)
