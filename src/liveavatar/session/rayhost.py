"""Session hosts on a Ray cluster: each is an async Ray actor running the same in-process host on its node.

Media flows from the node that hosts the session (its own peer and ICE set-up). What a session reads from
disk (avatar packs, knowledge-base indexes) comes from the data folder, which every node must see at the same
path (docs/cluster.md); the database is reached only by the API process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from liveavatar.config import Settings
from liveavatar.errors import LiveAvatarError
from liveavatar.session.host import HostEvent, HostGone, HostStats, RemoteError, SessionSpec

log = logging.getLogger(__name__)
EVENT_POLL = 5.0
"""Seconds one long-poll for events waits at most on the actor."""
Outcome = tuple[bool, Any]
"""(True, value) or (False, RemoteError): errors cross Ray as values, not as wrapped exceptions."""


class SessionHostActor:
    """The Ray actor: a `LocalHost` in the actor's event loop, with its own models (loaded once per actor)."""

    def __init__(self, host_id: str, settings: Settings) -> None:
        self.host_id = host_id
        self.settings = settings
        self._pending: list[HostEvent | None] = []
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> str:
        """Build the host (registries, models, ICE set-up); the node's address once it can take sessions."""
        from liveavatar.knowledge.index import IndexCache
        from liveavatar.llm import build_llm
        from liveavatar.session.dialogue import Brain, IndexRetriever
        from liveavatar.session.kit import build_kit, host_limits, load_models
        from liveavatar.session.local import LocalHost

        settings = self.settings
        logging.basicConfig(level=settings.log_level.upper())
        llm = settings.llm_settings()
        brain = Brain(build_llm(llm), llm, IndexRetriever(IndexCache(settings.data_dir / "knowledge")))
        kit = build_kit(settings, brain)
        await asyncio.to_thread(kit.avatars.prepare)
        self.host = LocalHost(self.host_id, kit, host_limits(settings))
        self._tasks = [
            asyncio.create_task(self._collect(), name="collect-events"),
            asyncio.create_task(asyncio.to_thread(load_models, kit), name="warm-up"),
        ]
        import socket

        return socket.gethostname()

    async def _collect(self) -> None:
        async for event in self.host.events():
            self._pending.append(event)
            self._arrived.set()
        self._pending.append(None)
        self._arrived.set()

    async def call(self, method: str, *args: Any) -> Outcome:
        """Run one host method; its value, or the API error it raised."""
        try:
            return True, await getattr(self.host, method)(*args)
        except LiveAvatarError as exc:
            return False, RemoteError.of(exc)

    async def next_events(self, wait: float) -> list[HostEvent | None]:
        """The events since the last poll, waiting up to `wait` seconds for one (None: the host has stopped)."""
        if not self._pending:
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return []
        events, self._pending = self._pending, []
        self._arrived.clear()
        return events

    async def shutdown(self) -> None:
        """End every session (each reported as failed: the server shut down)."""
        await self.host.aclose()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _ray() -> Any:
    import ray

    return ray


def _gone(exc: BaseException) -> bool:
    ray = _ray()
    return isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.RaySystemError)


class RayHost:
    """The API side of one session-host actor."""

    def __init__(self, host_id: str, actor: Any, node: str) -> None:
        self.host_id = host_id
        self.actor = actor
        self.node = node
        self._stopped = False
        self._drained = asyncio.Event()

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            ok, value = await self.actor.call.remote(method, *args)
        except Exception as exc:
            if _gone(exc):
                raise HostGone(f"session host {self.host_id} on {self.node} is gone") from exc
            raise
        if not ok:
            raise value.rebuild()
        return value

    async def open(self, spec: SessionSpec) -> None:
        """Start the session on the actor's node."""
        await self._call("open", spec)

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Offer in, answer out: the actor's peer answers, media flows from its node."""
        answer: str = await self._call("join", session_id, offer_sdp)
        return answer

    async def close(self, session_id: str, reason: str) -> None:
        """End the session on its node."""
        await self._call("close", session_id, reason)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """What was said in the session."""
        found: dict[str, Any] | None = await self._call("transcript", session_id)
        return found

    async def stats(self) -> HostStats:
        """The actor's counters."""
        stats: HostStats = await self._call("stats")
        return stats

    async def events(self) -> AsyncIterator[HostEvent]:
        """The actor's session events (long-polled); HostGone when the actor or its node dies."""
        while True:
            try:
                batch = await self.actor.next_events.remote(EVENT_POLL)
            except Exception as exc:
                if self._stopped:
                    return
                raise HostGone(f"session host {self.host_id} on {self.node} is gone: {type(exc).__name__}") from exc
            for event in batch:
                if event is None:
                    self._drained.set()
                    return
                yield event

    async def aclose(self) -> None:
        """End every session on the actor, then end the actor."""
        ray = _ray()
        try:
            await asyncio.wait_for(self.actor.shutdown.remote(), 60)
            # The event poll collects the last events (every session's end) before the actor goes.
            await asyncio.wait_for(self._drained.wait(), EVENT_POLL + 5)
        except Exception as exc:
            log.info("session host %s did not shut down cleanly: %r", self.host_id, exc)
        self._stopped = True
        ray.kill(self.actor, no_restart=True)


class RayCluster:
    """Connects to the cluster and starts session-host actors on it, spread over its nodes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ray = _ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_worker_niceness", "0")
        if not ray.is_initialized():
            # Ray's driver exits with status 15 on SIGTERM; the server keeps its own graceful shutdown.
            on_sigterm = signal.getsignal(signal.SIGTERM)
            ray.init(address=settings.ray_address, logging_level="warning", log_to_driver=False)
            signal.signal(signal.SIGTERM, on_sigterm)
        self._actor_class = ray.remote(SessionHostActor)

    def slots(self) -> int:
        """Session hosts to keep: as configured, else one per alive node."""
        if self.settings.ray_hosts:
            return self.settings.ray_hosts
        return max(1, sum(1 for node in _ray().nodes() if node.get("Alive")))

    async def start_host(self, host_id: str) -> RayHost:
        """Start one actor (spread over the nodes) and wait until it can take sessions."""
        actor = self._actor_class.options(
            num_cpus=self.settings.ray_host_cpus,
            scheduling_strategy="SPREAD",
            max_restarts=0,
            max_concurrency=1000,
        ).remote(host_id, self.settings)
        try:
            node = await asyncio.wait_for(actor.start.remote(), 300)
        except BaseException:
            _ray().kill(actor, no_restart=True)
            raise
        log.info("session host %s started on node %s", host_id, node)
        return RayHost(host_id, actor, node)
