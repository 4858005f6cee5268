"""The API side of the session-host seam: places sessions on hosts and records what happens to them.

The director owns the database's view of sessions: it writes each session's status from its host's events,
places new sessions on the least-loaded host, enforces the session limit over all hosts, replaces hosts that
die (failing their sessions) and heartbeats this API process's node so other processes can tell it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from liveavatar.errors import Busy, NotFound, ProcessingError, SessionClosed
from liveavatar.metrics import Metrics
from liveavatar.session.host import (
    HostEvent,
    HostGone,
    HostStats,
    KnowledgeSpec,
    SessionEnded,
    SessionHost,
    SessionJoined,
    SessionSpec,
    StageTimed,
)
from liveavatar.store import Store
from liveavatar.store.models import SessionRow
from liveavatar.store.sessions import Status

log = logging.getLogger(__name__)
HostStarter = Callable[[str], Awaitable[SessionHost]]
"""Starts a host with the given id and returns it once it can take sessions."""
HEARTBEAT = 5.0
"""Seconds between this node's heartbeats; a node silent for NODE_TIMEOUT_BEATS of them is gone."""
NODE_TIMEOUT_BEATS = 3
HOST_DIED = "the process hosting this session died"
RESTARTED = "server restarted while the session was live"
ORPHANED = "the server holding this session stopped"
STATS_TIMEOUT = 2.0


class Director:
    """Keeps `slots` hosts running and routes every session call to the host that holds the session."""

    def __init__(
        self,
        store: Store,
        *,
        node_id: str,
        slots: int,
        start_host: HostStarter,
        max_sessions: int,
        metrics: Metrics,
        restart_delay: float = 1.0,
    ) -> None:
        self._store = store
        self.node_id = node_id
        self._slots = slots
        self._start_host = start_host
        self.max_sessions = max_sessions
        self.metrics = metrics
        self._restart_delay = restart_delay
        self._hosts: dict[str, SessionHost] = {}
        self._starting = 0
        self._placed: dict[str, str] = {}
        """Live session id -> id of the host running it."""
        self._joined: set[str] = set()
        self._reserved = 0
        self._closing = False
        self._keepers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None

    # --- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fail sessions left live by dead nodes (this node's previous life too), then start the hosts."""
        await self._store.nodes.register(self.node_id)
        others = [n for n in await self._alive_nodes() if n != self.node_id]
        failed = await self._store.sessions.fail_orphans(RESTARTED, alive_nodes=others)
        if failed:
            log.warning("marked %d session(s) left live by a stopped server as failed", failed)
        self._heartbeat = asyncio.create_task(self._beat(), name="node-heartbeat")
        self._keepers = [asyncio.create_task(self._keep(slot), name=f"host-slot-{slot}") for slot in range(self._slots)]

    async def _alive_nodes(self) -> list[str]:
        return await self._store.nodes.alive(int(HEARTBEAT * NODE_TIMEOUT_BEATS * 1000))

    async def _beat(self) -> None:
        # Also fails the sessions of other API processes that stopped beating (one PostgreSQL, many APIs).
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._store.nodes.beat(self.node_id)
                alive = {self.node_id, *await self._alive_nodes()}
                failed = await self._store.sessions.fail_orphans(ORPHANED, alive_nodes=alive)
                if failed:
                    log.warning("marked %d session(s) of a stopped server as failed", failed)
            except Exception:
                log.exception("node heartbeat failed")

    async def _keep(self, slot: int) -> None:
        """Run one host at a time in this slot: start it, record its events, replace it when it dies."""
        generation = 0
        while not self._closing:
            generation += 1
            host_id = f"{self.node_id}/{slot}.{generation}"
            self._starting += 1
            try:
                host = await self._start_host(host_id)
            except Exception:
                log.exception("starting session host %s failed; trying again", host_id)
                await asyncio.sleep(self._restart_delay)
                continue
            finally:
                self._starting -= 1
            if self._closing:
                await host.aclose()
                return
            self._hosts[host_id] = host
            log.info("session host %s is up", host_id)
            error: str | None = None
            try:
                async for event in host.events():
                    await self._record(event)
            except HostGone as exc:
                error = str(exc) or "gone"
            except Exception as exc:
                log.exception("session host %s broke", host_id)
                error = repr(exc)
            del self._hosts[host_id]
            if error is None and self._closing:
                return
            await self._host_died(host_id, error or "its event stream ended")
            with contextlib.suppress(Exception):
                await host.aclose()

    async def _host_died(self, host_id: str, error: str) -> None:
        lost = [sid for sid, held_by in self._placed.items() if held_by == host_id]
        for session_id in lost:
            del self._placed[session_id]
            self._joined.discard(session_id)
            self.metrics.sessions.labels("failed").inc()
        self.metrics.sessions_live.set(len(self._placed))
        self.metrics.host_deaths.inc()
        log.error("session host %s died (%s); %d session(s) failed; starting a new one", host_id, error, len(lost))
        try:
            await self._store.sessions.fail_host(host_id, HOST_DIED)
        except Exception:
            log.exception("recording the sessions of dead host %s failed", host_id)

    async def _record(self, event: HostEvent) -> None:
        try:
            if isinstance(event, StageTimed):
                self.metrics.turn_stage_seconds.labels(event.stage).observe(event.seconds)
            elif isinstance(event, SessionJoined):
                await self._mark_live(event.session_id)
            elif isinstance(event, SessionEnded):
                await self._finish(event.session_id, Status.CLOSED, event.reason)
            else:
                await self._finish(event.session_id, Status.FAILED, event.error)
        except Exception:
            log.exception("recording %r failed", event)

    async def _mark_live(self, session_id: str) -> None:
        # Recorded by whichever comes first: the host's event or the join call's answer.
        if session_id in self._placed and session_id not in self._joined:
            self._joined.add(session_id)
            self.metrics.sessions.labels("joined").inc()
            await self._store.sessions.set_status(session_id, Status.LIVE)

    async def _finish(self, session_id: str, status: Status, reason: str) -> None:
        self._joined.discard(session_id)
        if self._placed.pop(session_id, None) is not None:
            self.metrics.sessions.labels("closed" if status == Status.CLOSED else "failed").inc()
            self.metrics.sessions_live.set(len(self._placed))
        await self._store.sessions.set_status(session_id, status, reason)

    async def aclose(self) -> None:
        """Shutdown: every host ends its sessions (recorded as failed: the server shut down) and stops."""
        self._closing = True
        await asyncio.gather(*(host.aclose() for host in list(self._hosts.values())), return_exceptions=True)
        # Keepers end with their hosts' event streams; one still starting a host closes it when it is up.
        for keeper in self._keepers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(keeper), 60)
        for task in [*self._keepers, self._heartbeat]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._store.nodes.remove(self.node_id)

    # --- sessions ---------------------------------------------------------------------------------

    @property
    def live_count(self) -> int:
        """Sessions held over all hosts, including those being created."""
        return len(self._placed) + self._reserved

    @contextlib.asynccontextmanager
    async def reservation(self) -> AsyncIterator[None]:
        """Hold one unit of capacity while a session is being created; 1215 when full or no host is up."""
        if self._closing or not self._hosts or self.live_count >= self.max_sessions:
            raise Busy
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    def _least_loaded(self) -> tuple[str, SessionHost]:
        load = dict.fromkeys(self._hosts, 0)
        for host_id in self._placed.values():
            if host_id in load:
                load[host_id] += 1
        if not load:
            raise Busy("no session host is up")
        host_id = min(load, key=lambda h: load[h])
        return host_id, self._hosts[host_id]

    async def open(self, row: SessionRow) -> None:
        """Store a new session, placed on the least-loaded host, and start it there."""
        host_id, host = self._least_loaded()
        row.node_id, row.host_id = self.node_id, host_id
        knowledge = None
        if kb_id := row.params.get("knowledge_id"):
            kb = await self._store.knowledge.get(kb_id, row.owner_id)
            if kb is not None:
                knowledge = KnowledgeSpec(kb.id, kb.prompt, kb.prologue)
        spec = SessionSpec(row.id, row.owner_id, row.avatar_id, row.mode_type, row.duration, row.params, knowledge)
        await self._store.sessions.add(row)
        self._placed[row.id] = host_id
        self.metrics.sessions.labels("created").inc()
        self.metrics.sessions_live.set(len(self._placed))
        started = time.perf_counter()
        try:
            await host.open(spec)
        except BaseException as exc:
            await self._finish(row.id, Status.FAILED, "the session could not be started")
            if isinstance(exc, HostGone):
                raise ProcessingError("the session host stopped; try again") from exc
            raise
        self.metrics.open_seconds.observe(time.perf_counter() - started)

    def _host_of(self, session_id: str) -> SessionHost | None:
        host_id = self._placed.get(session_id)
        return None if host_id is None else self._hosts.get(host_id)

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Connect a client to the session on its host: offer in, answer out."""
        host = self._host_of(session_id)
        if host is None:
            row = await self._store.sessions.get(session_id)
            if row is None:
                raise NotFound(f"session {session_id!r} does not exist")
            raise SessionClosed(f"session {session_id!r} has ended ({row.close_reason or 'closed'})")
        started = time.perf_counter()
        try:
            answer = await host.join(session_id, offer_sdp)
        except HostGone as exc:
            raise SessionClosed(f"session {session_id!r} has ended ({HOST_DIED})") from exc
        self.metrics.join_seconds.observe(time.perf_counter() - started)
        await self._mark_live(session_id)
        return answer

    async def close(self, session_id: str, reason: str) -> None:
        """End a session wherever it runs and record it as closed (idempotent)."""
        host = self._host_of(session_id)
        if host is not None:
            with contextlib.suppress(HostGone):
                await host.close(session_id, reason)
        await self._finish(session_id, Status.CLOSED, reason)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """What was said in a live session, from its host; None when no host holds it."""
        host = self._host_of(session_id)
        if host is None:
            return None
        with contextlib.suppress(HostGone):
            return await host.transcript(session_id)
        return None

    async def stats(self) -> list[HostStats]:
        """Every answering host's counters (a host that does not answer in time is left out)."""

        async def one(host: SessionHost) -> HostStats | None:
            try:
                return await asyncio.wait_for(host.stats(), STATS_TIMEOUT)
            except Exception:
                return None

        found = await asyncio.gather(*(one(host) for host in list(self._hosts.values())))
        stats = [s for s in found if s is not None]
        self.metrics.observe_hosts(len(self._hosts), self._starting, stats)
        return stats
