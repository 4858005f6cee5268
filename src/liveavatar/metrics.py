"""Prometheus metrics of one API process: sessions, session hosts, latencies (no keys, texts or tenant ids)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from liveavatar.llm.base import LLM, ChatMessage, aclose_iterator
from liveavatar.llm.resilience import Wrapper
from liveavatar.session.dialogue import Retriever
from liveavatar.session.host import HostStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The counters the session director keeps and `/metrics` exposes (a registry of its own per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_live = Gauge("liveavatar_sessions_live", "Sessions created and not yet ended.", registry=r)
        self.sessions = Counter(
            "liveavatar_sessions", "Session transitions: created, joined, closed, failed.", ["status"], registry=r
        )
        self.hosts = Gauge("liveavatar_hosts", "Session hosts by state (up, starting).", ["state"], registry=r)
        self.host_deaths = Counter("liveavatar_host_deaths", "Session hosts that died (and were replaced).", registry=r)
        self.host_sessions = Gauge("liveavatar_host_sessions", "Live sessions on each host.", ["host"], registry=r)
        self.host_cpu = Gauge(
            "liveavatar_host_cpu_seconds", "CPU seconds each host's process has used.", ["host"], registry=r
        )
        self.host_rss = Gauge("liveavatar_host_resident_bytes", "Resident memory of each host.", ["host"], registry=r)
        self.join_seconds = Histogram(
            "liveavatar_join_seconds",
            "Offer in -> answer out, through the session's host.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_seconds = Histogram(
            "liveavatar_session_open_seconds",
            "Session created -> held by its host (avatar, renderer, tasks ready).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_first_token_seconds = Histogram(
            "liveavatar_llm_first_token_seconds",
            "Turn stage: prompt sent -> the LLM's first token (this machine's LLM).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "liveavatar_retrieval_seconds",
            "Turn stage: question -> knowledge-base passages found.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_stage_seconds = Histogram(
            "liveavatar_turn_stage_seconds",
            "Turn stages timed in the session hosts: reply_to_first_sound (chat or transcript -> audio_start), "
            "reply_to_tts (reply -> its text asked of the TTS), tts_first_chunk, playback_lead (first chunk ready "
            "-> its first sample played), speech_gap (a reply's next piece ready only after the last one had "
            "played: the silence it left; none while synthesis keeps ahead); dialogue: retrieval, prompt_build, "
            "llm_first_token, first_clause (first token -> first complete clause); listening: voice_end_to_turn_end "
            "(the VAD's voice end -> end of turn, audio time), turn_end_lag (the listener behind the audio), "
            "speech_end_to_transcript (end of turn -> transcript), stt_pass (one speech-to-text run, partial or "
            "final, queueing included).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for status in ("created", "joined", "closed", "failed"):
            self.sessions.labels(status)  # present at 0 from the start

    def observe_hosts(self, up: int, starting: int, stats: Iterable[HostStats]) -> None:
        """Set the host gauges from the hosts' latest stats."""
        self.hosts.labels("up").set(up)
        self.hosts.labels("starting").set(starting)
        for gauge in (self.host_sessions, self.host_cpu, self.host_rss):
            gauge.clear()
        for host in stats:
            self.host_sessions.labels(host.host_id).set(host.live_sessions)
            self.host_cpu.labels(host.host_id).set(host.cpu_seconds)
            self.host_rss.labels(host.host_id).set(host.rss_bytes)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class TimedLLM(Wrapper):
    """An LLM that records the time to its first token (the `LLM` Protocol, wrapping any backend)."""

    def __init__(self, llm: LLM, first_token: Histogram) -> None:
        super().__init__(llm)
        self._first_token = first_token

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float, images: Sequence[bytes] = ()
    ) -> AsyncIterator[str]:
        """The wrapped stream; the first delta's delay is observed."""
        started = time.perf_counter()
        iterator = self.llm.stream(messages, max_tokens=max_tokens, temperature=temperature, images=images)
        first = True
        try:
            async for delta in iterator:
                if first:
                    self._first_token.observe(time.perf_counter() - started)
                    first = False
                yield delta
        finally:
            await aclose_iterator(iterator)


class TimedRetriever:
    """A retriever that records how long each search takes (the `Retriever` Protocol)."""

    def __init__(self, retriever: Retriever, seconds: Histogram) -> None:
        self.retriever = retriever
        self._seconds = seconds

    async def search(self, kb_id: str, query: str, k: int) -> list[str]:
        """The wrapped search, timed."""
        started = time.perf_counter()
        try:
            return await self.retriever.search(kb_id, query, k)
        finally:
            self._seconds.observe(time.perf_counter() - started)
