"""Measuring client for bench/transport.py: joins sessions over WebRTC in its own process and times what arrives.

Run by the bench, not by hand: `python bench/transport_client.py URL API_KEY`. It reads one JSON request per
line on stdin and answers each with one JSON line on stdout; it exits on `{"op": "quit"}` or end of input.

    {"op": "latency", "joins": 10}       -> {"answer_ms": [...], "first_frame_ms": [...]}
    {"op": "round_trips", "count": 200}  -> {"rtt_ms": [...]}
    {"op": "add", "count": 2}            -> {"sessions": 4, "first_frame_ms": [...]}
    {"op": "measure", "seconds": 8}      -> {"sessions": [{"frames", "seconds", "intervals_ms", "missing"}, ...]}
    {"op": "close"}                      -> {"closed": 4}

Decoding happens here (aiortc decodes every received frame), so its CPU cost stays out of the server process.
With BENCH_VIDEO=count in the environment, video frames are counted but not decoded (`count_video_only`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiortc import rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame

from liveavatar.client import Connection, LiveAvatarApi

LOOPBACK = ["127.0.0.1"]
AVATAR = "astronaut"
SESSION_SECONDS = 1800
FIRST_FRAME_TIMEOUT = 15.0
VIDEO_TICKS = 3600  # 90 kHz clock / 25 fps
Reply = dict[str, Any]


class CountingDecoder:
    """Stands in for the VP8 decoder: one 2x2 frame per complete received frame, stamped with its RTP time."""

    TIME_BASE = fractions.Fraction(1, 90_000)

    def decode(self, encoded_frame: JitterFrame) -> list[av.VideoFrame]:
        frame = av.VideoFrame(2, 2, "yuv420p")
        frame.pts = encoded_frame.timestamp
        frame.time_base = self.TIME_BASE
        return [frame]


def count_video_only() -> None:
    """Count received video frames without decoding them (this process's aiortc receivers, from now on).

    The bench's clients share the server's cores, and decoding 512x512 VP8 for every session is CPU the
    server then lacks (a browser decodes on its viewer's machine). Frames still go through aiortc's RTP
    depacketising and jitter buffer, so a frame is counted only when all its packets arrived; that the
    video decodes is what the tests check (tests/test_video_frames.py, the browser tests).
    """
    decoder = rtcrtpreceiver.get_decoder

    def get_decoder(codec: Any) -> Any:
        return CountingDecoder() if codec.mimeType.lower().startswith("video/") else decoder(codec)

    rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[assignment]


if os.environ.get("BENCH_VIDEO") == "count":
    count_video_only()


@dataclass
class Stream:
    """One joined session whose decoded video frames are stamped as they arrive."""

    session_id: str
    conn: Connection
    stamps: list[float] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)
    counter: asyncio.Task[None] | None = None

    def start_counting(self) -> None:
        """Read the session's video queue from now on, recording arrival time and pts of every frame."""
        self.counter = asyncio.create_task(self._count(), name=f"count-{self.session_id}")

    async def _count(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.conn.video.get()
            self.stamps.append(loop.time())
            self.pts.append(int(frame.pts or 0))

    def reset(self) -> None:
        """Forget what arrived so far (start of a measuring window)."""
        self.stamps.clear()
        self.pts.clear()

    def window(self, seconds: float) -> Reply:
        """What arrived since the last reset: frame count, arrival intervals, frames missing from the pts."""
        intervals = [round((b - a) * 1000, 3) for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        steps = [b - a for a, b in zip(self.pts, self.pts[1:], strict=False)]
        missing = sum(max(0, step // VIDEO_TICKS - 1) for step in steps)
        return {"frames": len(self.stamps), "seconds": seconds, "intervals_ms": intervals, "missing": missing}

    async def aclose(self, api: LiveAvatarApi) -> None:
        """Stop counting, leave the peer and close the session on the server (frees its capacity at once)."""
        if self.counter is not None:
            self.counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.counter
        await self.conn.aclose()
        await api.close_session(self.session_id)


def ms_since(start: float, end: float) -> float:
    """Milliseconds between two loop times, rounded to microseconds."""
    return round((end - start) * 1000, 3)


async def join_session(
    api: LiveAvatarApi, duration: int = SESSION_SECONDS, **params: Any
) -> tuple[Stream, float, float]:
    """Create (with `params`) and join a session; the stream plus offer->answer and offer->first-frame times (ms)."""
    session = await api.create_session(AVATAR, duration=duration, **params)
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    answered = loop.time()
    try:
        await asyncio.wait_for(conn.video.get(), FIRST_FRAME_TIMEOUT)
    except BaseException:
        await conn.aclose()
        raise
    first = conn.first_video_at if conn.first_video_at is not None else loop.time()
    return Stream(session["_id"], conn), ms_since(start, answered), ms_since(start, first)


class ClientWorker:
    """Holds this process's sessions and answers the bench's requests."""

    def __init__(self, api: LiveAvatarApi) -> None:
        self.api = api
        self.streams: list[Stream] = []

    async def join(self) -> tuple[Stream, float, float]:
        """Create and join a session; the stream plus offer->answer and offer->first-frame times (ms)."""
        return await join_session(self.api)

    async def latency(self, joins: int) -> Reply:
        """Join and leave `joins` sessions one after another, timing offer->answer and offer->first frame."""
        answer_ms: list[float] = []
        first_ms: list[float] = []
        for _ in range(joins):
            stream, answered, first = await self.join()
            answer_ms.append(answered)
            first_ms.append(first)
            await stream.aclose(self.api)
            await asyncio.sleep(0.2)  # let the server finish tearing the peer down
        return {"answer_ms": answer_ms, "first_frame_ms": first_ms}

    async def round_trips(self, count: int, warmup: int = 10) -> Reply:
        """Time `count` interrupt commands to their acks on one streaming session."""
        stream, _, _ = await self.join()
        try:
            for _ in range(warmup):
                await stream.conn.interrupt()
            rtt_ms: list[float] = []
            for _ in range(count):
                start = time.perf_counter()
                ack = await stream.conn.interrupt()
                rtt_ms.append(round((time.perf_counter() - start) * 1000, 4))
                if ack["pld"].get("code") != 1000:
                    raise RuntimeError(f"interrupt was not acked with 1000: {ack}")
            return {"rtt_ms": rtt_ms}
        finally:
            await stream.aclose(self.api)

    async def add(self, count: int) -> Reply:
        """Join `count` more sessions that keep streaming until `close`."""
        first_ms: list[float] = []
        for _ in range(count):
            stream, _, first = await self.join()
            stream.start_counting()
            self.streams.append(stream)
            first_ms.append(first)
        return {"sessions": len(self.streams), "first_frame_ms": first_ms}

    async def measure(self, seconds: float) -> Reply:
        """Count the frames every held session receives over the next `seconds`."""
        for stream in self.streams:
            stream.reset()
        await asyncio.sleep(seconds)
        return {"sessions": [stream.window(seconds) for stream in self.streams]}

    async def close(self) -> Reply:
        """Leave and close every held session."""
        streams, self.streams = self.streams, []
        for stream in streams:
            await stream.aclose(self.api)
        return {"closed": len(streams)}

    async def handle(self, request: Reply) -> Reply:
        """Answer one request."""
        op = request.get("op")
        if op == "latency":
            return await self.latency(int(request["joins"]))
        if op == "round_trips":
            return await self.round_trips(int(request["count"]))
        if op == "add":
            return await self.add(int(request["count"]))
        if op == "measure":
            return await self.measure(float(request["seconds"]))
        if op == "close":
            return await self.close()
        raise ValueError(f"unknown op {op!r}")


async def stdin_lines() -> asyncio.StreamReader:
    """stdin as an asyncio stream (the event loop keeps running media while we wait for the bench)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def answer(reply: Reply) -> None:
    """Write one reply line for the bench."""
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


class Worker(Protocol):
    """What `serve` drives: answers requests, closes its sessions."""

    async def handle(self, request: Reply) -> Reply:
        """Answer one request."""
        ...

    async def close(self) -> Reply:
        """Leave and close every held session."""
        ...


async def serve(url: str, api_key: str, make_worker: Callable[[LiveAvatarApi], Worker] = ClientWorker) -> None:
    """Answer requests until told to quit or stdin closes; sessions are always closed on the way out."""
    reader = await stdin_lines()
    async with LiveAvatarApi(url, api_key=api_key) as api:
        worker = make_worker(api)
        try:
            while line := await reader.readline():
                request = json.loads(line)
                if request.get("op") == "quit":
                    break
                try:
                    answer(await worker.handle(request))
                except Exception as exc:
                    answer({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            with contextlib.suppress(Exception):
                await worker.close()


def main() -> None:
    """Entry point: `transport_client.py URL API_KEY`."""
    url, api_key = sys.argv[1], sys.argv[2]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, api_key))


if __name__ == "__main__":
    main()
