"""The speaking avatar through a live session: real Piper speech, real renderer, checked on the client's streams."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from conftest import LOOPBACK, Deployment, hear, same_words, wait_until
from liveavatar.client import Connection, LiveAvatarApi
from liveavatar.render.pack import AvatarPack

BACKENDS = ("sqlite",)  # speech does not depend on storage
SERVER_ARGS = ("--max-sessions", "16")  # room for every session this module makes


def mouth_box(pack_dir: Path, avatar_id: str) -> tuple[int, int, int, int]:
    """The mouth region (x0, y0, x1, y1) of the avatar's rest frame, from its pack's landmarks."""
    # The default-size pack (`<id>-<version>.npz`): a server with another LIVEAVATAR_VIDEO_SIZE may share the folder.
    (path,) = (p for p in pack_dir.glob(f"{avatar_id}-*.npz") if re.fullmatch(rf"{avatar_id}-[0-9a-f]+\.npz", p.name))
    pack = AvatarPack.load(path)
    lips = pack.landmarks[[61, 291, 0, 17], :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    pad = (x1 - x0) * 0.25
    return int(x0 - pad), int(y0 - pad), int(x1 + pad), int(y1 + 2 * pad)


@dataclass
class Recording:
    """Frames received by the client, each with its arrival time."""

    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)
    video: list[tuple[float, np.ndarray]] = field(default_factory=list)


async def record(conn: Connection, until: asyncio.Event, box: tuple[int, int, int, int], rec: Recording) -> Recording:
    """Collect audio samples and mouth crops (grey) into `rec` until `until` is set (plus 0.6 s of audio)."""
    loop = asyncio.get_running_loop()
    x0, y0, x1, y1 = box

    async def audio() -> None:
        while True:
            frame: av.AudioFrame = await conn.audio.get()
            samples = frame.to_ndarray().reshape(-1, frame.layout.nb_channels if frame.format.is_packed else 1)
            rec.audio.append((loop.time(), samples.mean(axis=1) if samples.ndim == 2 else samples))

    async def video() -> None:
        while True:
            frame: av.VideoFrame = await conn.video.get()
            grey = frame.to_ndarray(format="gray")
            rec.video.append((loop.time(), grey[y0:y1, x0:x1].astype(np.float32)))

    tasks = [asyncio.create_task(audio()), asyncio.create_task(video())]
    await until.wait()
    tail = len(rec.audio) + 30  # 0.6 s more of 20 ms frames: the mouth settles after the sound
    await wait_until(lambda: len(rec.audio) >= tail, timeout=10, what="0.6 s of audio after the reply")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rec


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower())


async def speak_and_record(
    api: LiveAvatarApi, text: str, pack_dir: Path
) -> tuple[Recording, str, list[dict[str, Any]]]:
    """Join a session, say `text`, record the streams until audio_end; returns the recording, bot text, events."""
    # The packaged Piper voice: what Whisper hears is checked word by word (the astronaut's own voice is espeak-ng's).
    session = await api.create_session("astronaut", voice_id="piper-en-us-joe")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        await asyncio.wait_for(conn.video.get(), 10)
        for queue in (conn.video, conn.audio):
            while not queue.empty():
                queue.get_nowait()
        done = asyncio.Event()
        events: list[dict[str, Any]] = []
        rec = Recording()
        recorder = asyncio.create_task(record(conn, done, mouth_box(pack_dir, "astronaut"), rec))
        # some silence first: half a second of the resting avatar (its first frames are the mouth at rest)
        await wait_until(lambda: len(rec.audio) >= 25 and len(rec.video) >= 13, timeout=10, what="0.5 s at rest")
        conn.send_chat(text)
        pieces: list[str] = []
        while True:
            message = await conn.next_message(lambda m: m.get("type") in ("event", "chat"), timeout=60)
            if message["type"] == "chat":
                pieces.append(message["pld"]["text"])
                continue
            events.append(message)
            if message["pld"]["event"] == "audio_end":
                break
        done.set()
        return await recorder, "".join(pieces), events
    finally:
        await conn.aclose()


def envelopes(rec: Recording, step: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio RMS and mouth change, both resampled on one time grid (arrival times at the client)."""
    t0 = min(rec.audio[0][0], rec.video[0][0])
    a_t = np.array([t for t, _ in rec.audio]) - t0
    a_v = np.array([np.sqrt(np.mean(np.square(s.astype(np.float64)))) for _, s in rec.audio])
    rest = np.median(np.stack([crop for _, crop in rec.video[:5]]), axis=0)
    v_t = np.array([t for t, _ in rec.video]) - t0
    v_v = np.array([np.mean(np.abs(crop - rest)) for _, crop in rec.video])
    grid = np.arange(0, min(a_t[-1], v_t[-1]), step)
    return grid, np.interp(grid, a_t, a_v), np.interp(grid, v_t, v_v)


async def test_spoken_words_match_and_the_mouth_follows_the_sound(
    api: LiveAvatarApi, deployment: Deployment, whisper: Any
) -> None:
    text = "The quick brown fox jumps over the lazy dog. Then it runs away into the forest."
    pack_dir = Path(deployment.server.env["LIVEAVATAR_PACK_DIR"])
    rec, bot_text, events = await speak_and_record(api, text, pack_dir)
    assert bot_text == text
    assert [e["pld"]["event"] for e in events] == ["audio_start", "audio_end"]

    speech = np.concatenate([s for _, s in rec.audio]).astype(np.float32) / 32768.0
    segments, _ = await asyncio.to_thread(whisper.transcribe, speech[::3], language="en", beam_size=1)
    heard = words(" ".join(segment.text for segment in segments))
    assert same_words(heard, words(text)), heard

    grid, loud, mouth = envelopes(rec)
    speaking = loud > loud.max() * 0.1
    assert speaking.mean() > 0.15
    assert mouth[speaking].mean() > 3 * mouth[~speaking][: int(0.4 / 0.01)].mean() + 0.5  # moves vs rests
    # The lag between sound and mouth, measured on what the client received.
    a = (loud - loud.mean()) / loud.std()
    v = (mouth - mouth.mean()) / mouth.std()
    lags = np.arange(-20, 21)  # +-200 ms in 10 ms steps
    corr = [np.mean(a[max(0, -k) : len(a) - max(0, k)] * v[max(0, k) : len(v) - max(0, -k)]) for k in lags]
    lag_ms = int(lags[int(np.argmax(corr))]) * 10
    print(f"mouth lags sound by {lag_ms} ms (positive: mouth after sound); correlation {max(corr):.2f}")
    assert abs(lag_ms) <= 40
    assert max(corr) > 0.3


async def test_interrupt_cuts_sound_within_a_frame_and_the_record_ends_there(api: LiveAvatarApi) -> None:
    session = await api.create_session("astronaut")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        text = (
            "This is a long answer that keeps going for quite a while. It has several sentences in it. "
            "Each one takes a few seconds to say. Nobody should hear the end of it."
        )
        conn.send_chat(text)
        await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_start", timeout=30)
        await hear(conn, 1.5)  # 1.5 s of the answer reached us (a busy machine delays it, not shortens it)
        ack = await conn.interrupt()
        assert ack["pld"]["code"] == 1000
        await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_end", timeout=5)
        reply = await conn.bot_reply(timeout=5)  # the cut-off message still ends with fin
        assert text.startswith(reply.strip())
        transcript = await api.transcript(session["_id"])
        cut = transcript["interrupts"][0]
        assert 0 <= cut["silent_from"] - cut["at"] <= 0.020 + 1e-6  # silent from the next 20 ms frame
        record = transcript["messages"][-1]
        assert record["from"] == "bot" and record["interrupted"] is True
        heard = words(record["text"])
        assert 2 <= len(heard) < len(words(text)) and heard == words(text)[: len(heard)]
        # ~1.5 s of speech at ~2.5 words per second (plus what was in flight) were heard; the record ends there.
        assert 2 <= len(heard) <= 8, heard
        # Audio at the client is silent shortly after: within 0.3 s of audio, then for half a second.
        while not conn.audio.empty():  # what arrived before the cut was known here
            conn.audio.get_nowait()
        peaks = [np.abs((await asyncio.wait_for(conn.audio.get(), 5)).to_ndarray()).max() for _ in range(40)]
        assert max(peaks[15:]) < 200, peaks
    finally:
        await conn.aclose()


async def test_messages_queue_in_order(api: LiveAvatarApi) -> None:
    session = await api.create_session("astronaut")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        conn.send_chat("First message.")
        conn.send_chat("Second message.")
        assert await conn.bot_reply(timeout=30) == "First message."
        assert await conn.bot_reply(timeout=30) == "Second message."
    finally:
        await conn.aclose()


async def test_other_languages_speak_through_espeak(api: LiveAvatarApi) -> None:
    session = await api.create_session("grace_hopper", language="de")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        conn.send_chat("Guten Tag, wie geht es Ihnen?")
        assert await conn.bot_reply(timeout=30) == "Guten Tag, wie geht es Ihnen?"
        loud = 0.0
        while loud < 1000:
            frame = await asyncio.wait_for(conn.audio.get(), 10)
            loud = max(loud, float(np.abs(frame.to_ndarray()).max()))
        assert (await conn.set_params(lang="fr")).get("pld", {}).get("code") == 1000
    finally:
        await conn.aclose()
