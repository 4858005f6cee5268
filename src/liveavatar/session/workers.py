"""The API side of a worker process: a `SessionHost` whose sessions live in a child process.

Also serves what workers share through the API process: LLM generations and knowledge-base searches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from typing import Any

from liveavatar.config import Settings
from liveavatar.llm import ChatMessage
from liveavatar.session.channel import Channel
from liveavatar.session.dialogue import Brain
from liveavatar.session.host import HostEvent, HostGone, HostStats, SessionSpec
from liveavatar.session.worker import READY, WorkerConfig, run_worker

log = logging.getLogger(__name__)
START_TIMEOUT = 180.0
"""Seconds a new worker may take to import and load what its sessions need (slow on a busy small box)."""
CALL_TIMEOUT = 60.0


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class WorkerHost:
    """Sessions held by one worker process (spawned), reached over a pipe."""

    def __init__(self, host_id: str, process: BaseProcess, channel: Channel, events: asyncio.Queue[Any]) -> None:
        self.host_id = host_id
        self.process = process
        self._channel = channel
        self._events = events
        self._closing = False
        self._watch = asyncio.create_task(self._watch_pipe(), name=f"watch-{host_id}")

    @classmethod
    async def start(cls, host_id: str, settings: Settings, brain: Brain) -> WorkerHost:
        """Spawn a worker and wait until it can take sessions."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=run_worker, args=(theirs, WorkerConfig(host_id, settings)), name=f"liveavatar-worker-{host_id}"
        )
        process.daemon = True
        await asyncio.to_thread(process.start)
        theirs.close()  # only the child holds its end now: its death reads as EOF here
        events: asyncio.Queue[Any] = asyncio.Queue()
        ready = asyncio.get_running_loop().create_future()

        def on_notice(notice: Any) -> None:
            if notice == READY:
                if not ready.done():
                    ready.set_result(None)
            else:
                events.put_nowait(notice)

        async def llm(
            messages: list[tuple[str, str]], max_tokens: int, temperature: float, images: list[bytes]
        ) -> AsyncIterator[str]:
            chat = [ChatMessage(role, content) for role, content in messages]  # type: ignore[arg-type]
            async for delta in brain.llm.stream(chat, max_tokens=max_tokens, temperature=temperature, images=images):
                yield delta

        async def search(kb_id: str, query: str, k: int) -> list[str]:
            return [] if brain.retriever is None else await brain.retriever.search(kb_id, query, k)

        channel = Channel(
            ours, handlers={"search": search}, streams={"llm": llm}, on_notice=on_notice, name=f"host {host_id}"
        )
        channel.start()
        lost = asyncio.create_task(channel.lost.wait())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.wait([ready, lost], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            lost.cancel()
        if not ready.done():
            ready.cancel()
            process.kill()
            await asyncio.to_thread(process.join, 10)
            await channel.aclose(wait=1.0)
            raise HostGone(f"worker {host_id} did not start (exit code {process.exitcode})")
        log.info("worker %s started (pid %s)", host_id, process.pid)
        return cls(host_id, process, channel, events)

    async def _watch_pipe(self) -> None:
        await self._channel.lost.wait()
        if self._closing:
            self._events.put_nowait(None)
        else:
            await asyncio.to_thread(self.process.join, 1.0)
            self._events.put_nowait(HostGone(f"worker {self.host_id} exited (code {self.process.exitcode})"))

    async def open(self, spec: SessionSpec) -> None:
        """Start the session in the worker."""
        await self._channel.call("open", spec, timeout=CALL_TIMEOUT)

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Offer in, answer out: the worker's own peer answers, media flows from the worker."""
        answer: str = await self._channel.call("join", session_id, offer_sdp, timeout=CALL_TIMEOUT)
        return answer

    async def close(self, session_id: str, reason: str) -> None:
        """End the session in the worker."""
        await self._channel.call("close", session_id, reason, timeout=CALL_TIMEOUT)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """What was said in the session, from the worker."""
        found: dict[str, Any] | None = await self._channel.call("transcript", session_id, timeout=CALL_TIMEOUT)
        return found

    async def stats(self) -> HostStats:
        """The worker's counters."""
        stats: HostStats = await self._channel.call("stats", timeout=CALL_TIMEOUT)
        return stats

    async def events(self) -> AsyncIterator[HostEvent]:
        """The worker's session events; HostGone when the process dies."""
        while True:
            item = await self._events.get()
            if item is None:
                return
            if isinstance(item, HostGone):
                raise item
            yield item

    async def aclose(self) -> None:
        """End every session in the worker (each reported), then stop the process."""
        self._closing = True
        if not self._channel.lost.is_set():
            with contextlib.suppress(HostGone, TimeoutError):
                await self._channel.call("shutdown", timeout=CALL_TIMEOUT)
        await asyncio.to_thread(self.process.join, 10.0)
        if self.process.is_alive():
            log.warning("worker %s did not stop: killing it", self.host_id)
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5.0)
        await self._channel.aclose(wait=2.0)
        if not self._watch.done():
            self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self._events.put_nowait(None)
