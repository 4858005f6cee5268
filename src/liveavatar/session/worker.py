"""A worker process: one session host with its own event loop, models and ICE set-up, driven over a pipe.

The API process starts it (multiprocessing, spawn) and talks to it through a `Channel`. What need not be
per worker stays in the API process and is reached through the same pipe: the LLM (one local model per
machine) and knowledge-base retrieval (one embedding model per machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from liveavatar.config import Settings
from liveavatar.errors import LiveAvatarError
from liveavatar.llm import ChatMessage, LLMError, LLMSettings, estimate_tokens
from liveavatar.memory import freeze_startup, trim_periodically, tune_allocator
from liveavatar.session.channel import Channel
from liveavatar.session.dialogue import Brain
from liveavatar.session.host import HostGone, SessionSpec
from liveavatar.session.kit import build_kit, host_limits, load_models
from liveavatar.session.local import LocalHost

log = logging.getLogger(__name__)
READY = "ready"
"""The notice a worker sends once it can take sessions."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker is started with (pickled to the new process)."""

    host_id: str
    settings: Settings


class RemoteLLM:
    """The API process's LLM, reached over the worker's pipe (the `LLM` Protocol)."""

    def __init__(self, channel: Channel, settings: LLMSettings) -> None:
        self._channel = channel
        self.supports_images = settings.supports_images
        self.context_tokens = settings.context_tokens

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float, images: Sequence[bytes] = ()
    ) -> AsyncIterator[str]:
        """Text deltas generated in the API process; closing this iterator stops the generation there."""
        plain = [(m.role, m.content) for m in messages]
        deltas = self._channel.stream("llm", plain, max_tokens, temperature, list(images))
        try:
            async for delta in deltas:
                yield delta
        except LLMError:
            raise
        except LiveAvatarError as exc:
            raise LLMError(exc.msg) from exc
        except HostGone as exc:
            raise LLMError("the server process is gone") from exc
        finally:
            await deltas.aclose()

    def count_tokens(self, text: str) -> int:
        """A tokenizer-free estimate that errs high (the model's tokenizer lives in the API process)."""
        return estimate_tokens(text)

    async def aclose(self) -> None:
        """Nothing to release: the model belongs to the API process."""


class RemoteRetriever:
    """Knowledge-base retrieval in the API process (its embedding model and indexes), over the pipe."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def search(self, kb_id: str, query: str, k: int) -> list[str]:
        """The best `k` passages' texts, best first."""
        found: list[str] = await self._channel.call("search", kb_id, query, k, timeout=30.0)
        return found


def run_worker(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a worker process: serve the pipe until told to stop or until the API process is gone."""
    tune_allocator()  # before any thread starts (see liveavatar.memory)
    # Ctrl-C and SIGTERM reach the whole process group: the API process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=config.settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{config.host_id}] %(name)s: %(message)s",
    )
    asyncio.run(_serve(conn, config))


async def _serve(conn: Connection, config: WorkerConfig) -> None:
    settings = config.settings
    stopped = asyncio.Event()
    host: LocalHost

    async def open_session(spec: SessionSpec) -> None:
        await host.open(spec)

    async def join(session_id: str, offer_sdp: str) -> str:
        return await host.join(session_id, offer_sdp)

    async def close(session_id: str, reason: str) -> None:
        await host.close(session_id, reason)

    async def transcript(session_id: str) -> dict[str, Any] | None:
        return await host.transcript(session_id)

    async def stats() -> Any:
        return await host.stats()

    async def shutdown() -> None:
        await host.aclose()
        await forwarder  # every event is on the pipe before the answer
        stopped.set()

    channel = Channel(
        conn,
        handlers={
            "open": open_session,
            "join": join,
            "close": close,
            "transcript": transcript,
            "stats": stats,
            "shutdown": shutdown,
        },
        name=f"worker {config.host_id}",
    )
    llm = settings.llm_settings()
    kit = build_kit(settings, Brain(RemoteLLM(channel, llm), llm, RemoteRetriever(channel)))
    host = LocalHost(config.host_id, kit, host_limits(settings))

    async def forward() -> None:
        async for event in host.events():
            with contextlib.suppress(HostGone):
                channel.notify(event)

    forwarder = asyncio.create_task(forward(), name="forward-events")
    channel.start()
    await asyncio.to_thread(kit.avatars.prepare)  # packs come from the cache the API process filled
    freeze_startup()  # no session exists yet
    channel.notify(READY)

    async def warm() -> None:
        await asyncio.to_thread(load_models, kit)
        if not (await host.stats()).live_sessions:  # frozen objects are never collected
            freeze_startup()

    warm_up = asyncio.create_task(warm(), name="warm-up")
    trimming = asyncio.create_task(trim_periodically(), name="trim")
    lost = asyncio.create_task(channel.lost.wait(), name="pipe-lost")
    stop = asyncio.create_task(stopped.wait(), name="stopped")
    await asyncio.wait([lost, stop], return_when=asyncio.FIRST_COMPLETED)
    if not stopped.is_set():
        log.warning("the API process is gone: closing this worker's sessions")
        await host.aclose()
        await forwarder
    for task in (lost, stop, trimming):
        task.cancel()
    await asyncio.gather(warm_up, lost, stop, trimming, return_exceptions=True)
