"""Voice interaction end to end: recorded speech as the client's microphone, transcripts, replies, barge-in."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from conftest import LOOPBACK, hear, same_words
from liveavatar.client import Connection, LiveAvatarApi, MicrophoneTrack

BACKENDS = ("sqlite",)  # listening does not depend on storage
SERVER_ARGS = ("--max-sessions", "16")  # room for every session this module makes


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower())


def user_chat(message: dict[str, Any]) -> bool:
    """A transcript of the user's speech."""
    return message.get("type") == "chat" and message.get("pld", {}).get("from") == "user"


async def join_with_mic(api: LiveAvatarApi, **params: Any) -> tuple[dict[str, Any], Connection, MicrophoneTrack]:
    """A session joined with a microphone track the test can feed."""
    mic = MicrophoneTrack()
    session = await api.create_session("astronaut", **params)
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, microphone=mic)
    await asyncio.wait_for(conn.video.get(), 10)
    return session, conn, mic


async def test_spoken_question_is_transcribed_and_answered(
    api: LiveAvatarApi, say: Callable[[str], tuple[np.ndarray, int]]
) -> None:
    _, conn, mic = await join_with_mic(api)
    try:
        samples, rate = await asyncio.to_thread(say, "What time does the library open tomorrow?")
        mic.push(samples, rate)
        heard = await conn.next_message(user_chat, timeout=30)
        assert heard["fin"] is True
        assert same_words(words(heard["pld"]["text"]), words("What time does the library open tomorrow?"))
        answer = await conn.bot_reply(timeout=30)  # retelling: the avatar repeats what it heard
        assert words(answer) == words(heard["pld"]["text"])
    finally:
        await conn.aclose()


async def test_pause_length_against_silence_duration(
    api: LiveAvatarApi, say: Callable[[str], tuple[np.ndarray, int]]
) -> None:
    first, rate = await asyncio.to_thread(say, "I would like a coffee")
    second, _ = await asyncio.to_thread(say, "and a big glass of orange juice")
    juice = {"glass", "orange", "juice"}  # Whisper hears at least one of these in the second phrase
    pause = np.zeros(int(0.4 * rate), dtype=np.int16)
    phrase = np.concatenate([first, pause, second])
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300}
    _, conn, mic = await join_with_mic(api, voice_params={"turn_detection": {**vad, "silence_duration_ms": 800}})
    try:
        mic.push(phrase, rate)
        one = await conn.next_message(user_chat, timeout=30)
        assert "coffee" in words(one["pld"]["text"]) and juice & set(words(one["pld"]["text"]))  # one turn
        # Live change: shorter silence from the next utterance on; the 400 ms pause now ends the turn.
        ack = await conn.set_params(vparams={"turn_detection": {**vad, "silence_duration_ms": 300}})
        assert ack["pld"]["code"] == 1000
        await conn.bot_reply(timeout=30)
        mic.push(phrase, rate)
        two = await conn.next_message(user_chat, timeout=30)
        three = await conn.next_message(user_chat, timeout=30)
        # Two turns now: the cut fell in the pause.
        assert "coffee" in words(two["pld"]["text"]) and not juice & set(words(two["pld"]["text"]))
        assert juice & set(words(three["pld"]["text"])) and "coffee" not in words(three["pld"]["text"])
    finally:
        await conn.aclose()


async def test_barge_in_stops_the_avatar_and_keeps_what_the_user_said(
    api: LiveAvatarApi, say: Callable[[str], tuple[np.ndarray, int]]
) -> None:
    session, conn, mic = await join_with_mic(api)
    try:
        conn.send_chat(
            "Let me tell you a long story about the sea. It goes on and on for a long time. "
            "There are waves, and ships, and many many birds flying over the water all day."
        )
        await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_start", timeout=30)
        await hear(conn, 1.0)  # the user hears a second of the story, then speaks over it
        samples, rate = await asyncio.to_thread(say, "Stop, please tell me about the weather instead.")
        mic.push(samples, rate)
        await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_end", timeout=10)
        heard = await conn.next_message(user_chat, timeout=30)
        assert "weather" in words(heard["pld"]["text"])  # the speech that interrupted is not lost
        transcript = await api.transcript(session["_id"])
        barge = transcript["barge_ins"][0]
        latency = barge["silent_from"] - barge["onset"]
        print(f"barge-in: avatar silent {latency * 1000:.0f} ms after the user's speech onset")
        assert 0 <= latency <= 0.300
        story = [m for m in transcript["messages"] if m["from"] == "bot"][0]
        assert story["interrupted"] is True
    finally:
        await conn.aclose()
