"""Measuring client for bench/client_render.py: talking client-rendered sessions (audio + animation stream).

Run by the bench, not by hand: `python bench/client_render_client.py URL API_KEY`. Same requests and answers
as bench/speaking_client.py (`add`, `measure`, `close`). With BENCH_RENDER=client (the default) sessions are
created with `render: "client"`: the "frames" of a window are the animation frames (face states) received,
not video frames, and `ahead_ms` tells how far ahead of the audio received by then each FRAMES message
arrived; with BENCH_RENDER=server they are server-rendered, measured as bench/speaking_client.py does.
BENCH_VOICE picks the voice (default: the packaged Piper voice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from liveavatar.client import Connection, LiveAvatarApi
from liveavatar.media import AUDIO_RATE
from liveavatar.protocol.animation import Frames
from speaking_client import CREATE_PARAMS, SpeakingWorker, Talker
from transport_client import (
    AVATAR,
    FIRST_FRAME_TIMEOUT,
    LOOPBACK,
    SESSION_SECONDS,
    Stream,
    join_session,
    ms_since,
    serve,
)

Reply = dict[str, Any]
FRAME_SAMPLES = AUDIO_RATE // 25


@dataclass
class AnimationStream(Stream):
    """A joined client-rendered session whose animation frames (and audio positions) are stamped as they arrive."""

    ahead_ms: list[float] = field(default_factory=list)

    def start_counting(self) -> None:
        """Read the session's animation messages from now on."""
        self.counter = asyncio.create_task(self._count(), name=f"count-{self.session_id}")

    async def _count(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, message = await self.conn.animation.get()
            if isinstance(message, Frames):
                for position in message.positions():
                    self.stamps.append(loop.time())
                    self.pts.append(position)
                self.ahead_ms.append(1000 * (message.first_position - self.conn.audio_until) / AUDIO_RATE)

    def reset(self) -> None:
        """Forget what arrived so far (start of a measuring window)."""
        super().reset()
        self.ahead_ms.clear()

    def window(self, seconds: float) -> Reply:
        """Frames received, arrival intervals between batches, positions skipped (not re-sent after a CUT)."""
        batches = sorted(set(self.stamps))
        intervals = [round((b - a) * 1000, 3) for a, b in zip(batches, batches[1:], strict=False)]
        missing = sum(max(0, (b - a) // FRAME_SAMPLES - 1) for a, b in zip(self.pts, self.pts[1:], strict=False))
        return {
            "frames": len(self.stamps),
            "seconds": seconds,
            "intervals_ms": intervals,
            "missing": missing,
            "ahead_ms": list(self.ahead_ms),
        }


async def join_client_rendered(
    api: LiveAvatarApi, duration: int = SESSION_SECONDS, **params: Any
) -> tuple[AnimationStream, float, float]:
    """Create and join a client-rendered session; offer -> answer and offer -> first animation frame (ms)."""
    session = await api.create_session(AVATAR, duration=duration, render="client", **params)
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, render="client")
    answered = loop.time()
    try:
        while True:
            _, message = await asyncio.wait_for(conn.animation.get(), FIRST_FRAME_TIMEOUT)
            if isinstance(message, Frames):
                break
    except BaseException:
        await conn.aclose()
        raise
    return AnimationStream(session["_id"], conn), ms_since(start, answered), ms_since(start, loop.time())


class ClientRenderWorker(SpeakingWorker):
    """Talking sessions, client-rendered or not (BENCH_RENDER); measured like bench/speaking_client.py's."""

    async def add(self, count: int) -> Reply:
        """Join `count` more sessions, each talking from the moment it is joined until `close`."""
        params = {**CREATE_PARAMS, "voice_id": os.environ.get("BENCH_VOICE") or CREATE_PARAMS["voice_id"]}
        client = os.environ.get("BENCH_RENDER", "client") == "client"
        first_ms: list[float] = []
        for _ in range(count):
            joined = await (join_client_rendered if client else join_session)(self.api, **params)
            stream, _, first = joined
            self.talkers.append(Talker.start(stream, self._joined))
            self._joined += 1
            first_ms.append(first)
        return {"sessions": len(self.talkers), "first_frame_ms": first_ms}


def main() -> None:
    """Entry point: `client_render_client.py URL API_KEY`."""
    url, api_key = sys.argv[1], sys.argv[2]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, api_key, ClientRenderWorker))


if __name__ == "__main__":
    main()
