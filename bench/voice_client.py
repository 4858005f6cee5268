"""Measuring client for bench/voice.py: speaks into a session's microphone and times what the avatar does.

Run by the bench, not by hand: `python bench/voice_client.py URL API_KEY`. It reads one JSON request per line
on stdin and answers each with one JSON line on stdout; it exits on `{"op": "quit"}` or end of input.

    {"op": "prepare", "texts": [...]}
        -> {"load_s": ..., "speech": [{"text", "seconds", "lead_ms", "voiced_ms", "trail_ms"}, ...]}
    {"op": "converse", "mode": 1, "utterances": [...], "warmup": "..." | null, "listen": 1.0, "silence_ms": null}
        -> {"cold": {...} | null, "turns": [{"end_to_sound_ms", "end_to_transcript_ms", ...}, ...]}
    {"op": "barge_in", "story": "...", "utterances": [...], "delay": 1.0, "silence_ms": null}
        -> {"trials": [{"client_ms", "server_ms", ...}, ...]}

The user's speech is made with the packaged Piper voice (as tests/test_voice.py does) and pushed into a
`MicrophoneTrack`, which sends it in real time, 20 ms a frame. This process stamps every frame the track
hands to the sender, so the moment any sample of the speech went out is known: the stamp of its frame plus
its offset in the frame. The speech's end is its last sample whose |value| exceeds THRESHOLD, its onset the
first such sample; the avatar's sound is a decoded 20 ms frame whose peak exceeds THRESHOLD, as in
bench/speaking_client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from liveavatar.client import Connection, LiveAvatarApi, MicrophoneTrack
from liveavatar.client.connection import Message
from liveavatar.media import AUDIO_RATE as RATE
from liveavatar.media import AUDIO_SAMPLES as FRAME
from liveavatar.speech.resample import resample
from speaking_client import THRESHOLD, Listener, event_name, is_bot_chat
from transport_client import AVATAR, FIRST_FRAME_TIMEOUT, LOOPBACK, SESSION_SECONDS, Stream, ms_since, serve

VOICE_ID = "piper-en-us-joe"
IDLE_BEFORE_SPEECH = 0.8
"""Seconds a session stays idle before each utterance (the previous reply has stopped)."""
REPLY_TIMEOUT = 90.0
"""The first reply after the server started also loads Piper (and the LLM in dialogue mode)."""
END_TIMEOUT = 15.0
BARGE_TIMEOUT = 10.0
"""Seconds after the interrupting speech was pushed within which the avatar must have stopped."""
Reply = dict[str, Any]


@dataclass(frozen=True)
class Speech:
    """An utterance as the microphone sends it: 48 kHz mono, and where its voice starts and ends."""

    text: str
    samples: npt.NDArray[np.int16]
    first_voiced: int
    last_voiced: int

    @classmethod
    def of(cls, text: str, audio: npt.NDArray[np.int16], rate: int) -> Speech:
        """`audio` at `rate` as the microphone track will send it (resampled the way the track does)."""
        samples = resample(audio, rate, RATE)
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > THRESHOLD)
        if not len(loud):
            raise ValueError(f"no voice in the speech made for {text!r}")
        return cls(text, samples, int(loud[0]), int(loud[-1]))

    def describe(self) -> Reply:
        """Length, leading silence, voiced span and trailing silence in ms."""
        return {
            "text": self.text,
            "seconds": len(self.samples) / RATE,
            "lead_ms": 1000 * self.first_voiced / RATE,
            "voiced_ms": 1000 * (self.last_voiced - self.first_voiced) / RATE,
            "trail_ms": 1000 * (len(self.samples) - 1 - self.last_voiced) / RATE,
        }


class StampedMicrophone(MicrophoneTrack):
    """A MicrophoneTrack that records when it hands each 20 ms frame to the sender (event-loop time)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[float] = []
        """Loop time frame i was handed out; frame i holds stream samples [i * FRAME, (i + 1) * FRAME)."""
        self._queued_end = 0

    def push_speech(self, samples: npt.NDArray[np.int16]) -> int:
        """Queue 48 kHz samples after what is queued; the stream position of their first sample.

        The track sends what is queued frame by frame and silence when nothing is: queued samples start
        at the next frame not handed out yet, or right after earlier queued samples.
        """
        start = max(self._queued_end, len(self.sent_at) * FRAME)
        self.push(samples, RATE)
        self._queued_end = start + len(samples)
        return start

    def time_of(self, position: int) -> float | None:
        """Loop time stream sample `position` went out (its frame's stamp + its offset); None if not yet."""
        frame = position // FRAME
        if frame >= len(self.sent_at):
            return None
        return self.sent_at[frame] + (position % FRAME) / RATE

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        self.sent_at.append(asyncio.get_running_loop().time())
        return frame


def is_user_chat(message: Message) -> bool:
    """A (final) transcript of the user's speech."""
    return message.get("type") == "chat" and message.get("pld", {}).get("from") == "user" and bool(message.get("fin"))


def found(listener: Listener, after: float, match: Any) -> tuple[float, Message] | None:
    """The first message after `after` that matches, with its arrival time."""
    return next(((at, m) for at, m in listener.messages if at >= after and match(m)), None)


class VoiceWorker:
    """Speaks into sessions and answers the bench's requests."""

    def __init__(self, api: LiveAvatarApi, url: str, api_key: str) -> None:
        self.api = api
        self.url = url
        self.api_key = api_key
        self.speech: dict[str, Speech] = {}

    # --- speech ------------------------------------------------------------------------------------

    async def prepare(self, texts: list[str]) -> Reply:
        """Make the speech for `texts` with the packaged Piper voice (before anything is timed)."""
        from liveavatar.speech.voices import VoiceRegistry, discover_voices

        started = time.perf_counter()
        voices = VoiceRegistry(discover_voices())
        voice = voices.default_voice("en")
        tts = voices.tts_for(voice)
        for text in texts:
            if text in self.speech:
                continue
            chunks = [chunk async for chunk in tts.synthesize(text, voice)]
            audio = np.concatenate([chunk.audio for chunk in chunks])
            self.speech[text] = Speech.of(text, audio, chunks[0].sample_rate)
        return {
            "seconds": time.perf_counter() - started,
            "voice": voice.voice_id,
            "speech": [self.speech[text].describe() for text in texts],
        }

    # --- sessions ----------------------------------------------------------------------------------

    async def join(self, mode: int, silence_ms: int | None) -> tuple[Listener, StampedMicrophone]:
        """Create and join a session with a microphone; listening to its audio and messages."""
        params: dict[str, Any] = {"mode_type": mode, "voice_id": VOICE_ID, "language": "en"}
        if silence_ms is not None:
            params["voice_params"] = {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}
        mic = StampedMicrophone()
        session = await self.api.create_session(AVATAR, duration=SESSION_SECONDS, **params)
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, microphone=mic)
        try:
            await asyncio.wait_for(conn.video.get(), FIRST_FRAME_TIMEOUT)
        except BaseException:
            await conn.aclose()
            raise
        listener = Listener(Stream(session["_id"], conn))
        listener.start()
        return listener, mic

    async def leave(self, listener: Listener) -> None:
        """Stop listening, leave and close the session."""
        await listener.aclose()
        await listener.stream.aclose(self.api)

    async def barge_ins(self, session_id: str) -> list[dict[str, float]]:
        """The server's barge-in records of a session (session-clock seconds)."""
        records: list[dict[str, float]] = (await self.api.transcript(session_id))["barge_ins"]
        return records

    # --- voice to voice ----------------------------------------------------------------------------

    async def converse(
        self, mode: int, utterances: list[str], warmup: str | None, listen: float, silence: int | None
    ) -> Reply:
        """One session in `mode`: speak each utterance, time its end in the mic stream -> the avatar's sound."""
        listener, mic = await self.join(mode, silence)
        try:
            cold = await self._turn(listener, mic, self.speech[warmup], listen) if warmup is not None else None
            turns = [await self._turn(listener, mic, self.speech[text], listen) for text in utterances]
        finally:
            await self.leave(listener)
        return {"cold": cold, "turns": turns}

    async def _turn(self, listener: Listener, mic: StampedMicrophone, speech: Speech, listen: float) -> Reply:
        await asyncio.sleep(IDLE_BEFORE_SPEECH)
        loop = asyncio.get_running_loop()
        pushed = loop.time()
        start = mic.push_speech(speech.samples)
        end_position = start + speech.last_voiced

        def answered() -> bool:
            end = mic.time_of(end_position)
            return end is not None and listener.first_sound(end) is not None

        await listener.until(answered, REPLY_TIMEOUT)
        end = mic.time_of(end_position)
        assert end is not None
        sound = listener.first_sound(end)
        assert sound is not None
        interrupted = await self._hear_then_stop(listener, end, listen)
        heard = found(listener, pushed, is_user_chat)
        started = listener.first_message(end, lambda m: event_name(m) == "audio_start")
        bot = listener.first_message(end, is_bot_chat)
        first = mic.time_of(start)
        return {
            "text": speech.text,
            "end_to_sound_ms": ms_since(end, sound),
            "end_to_transcript_ms": ms_since(end, heard[0]) if heard is not None else None,
            "end_to_audio_start_ms": ms_since(end, started) if started is not None else None,
            "end_to_bot_text_ms": ms_since(end, bot) if bot is not None else None,
            "transcript": str(heard[1]["pld"].get("text", "")) if heard is not None else None,
            "speech_s": len(speech.samples) / RATE,
            "mic_lag_ms": ms_since(pushed, first) if first is not None else None,
            "interrupted": interrupted,
        }

    async def _hear_then_stop(self, listener: Listener, after: float, listen: float) -> bool:
        """Let the reply play `listen` seconds, then interrupt it; wait for its audio_end. Whether it was cut."""

        def ended() -> bool:
            return any(at > after for at in listener.events("audio_end"))

        with contextlib.suppress(TimeoutError):
            await listener.until(ended, listen)
        if ended():
            return False
        await listener.stream.conn.interrupt()
        await listener.until(ended, END_TIMEOUT)
        return True

    # --- barge-in ----------------------------------------------------------------------------------

    async def barge_in(self, story: str, utterances: list[str], delay: float, silence: int | None) -> Reply:
        """One retelling session: the avatar tells `story`; `delay` s into its sound, the user speaks."""
        listener, mic = await self.join(1, silence)
        try:
            trials = [await self._barge(listener, mic, story, self.speech[text], delay) for text in utterances]
        finally:
            await self.leave(listener)
        return {"trials": trials}

    async def _barge(
        self, listener: Listener, mic: StampedMicrophone, story: str, speech: Speech, delay: float
    ) -> Reply:
        await asyncio.sleep(IDLE_BEFORE_SPEECH)
        conn = listener.stream.conn
        loop = asyncio.get_running_loop()
        before = len(await self.barge_ins(listener.stream.session_id))
        sent = loop.time()
        conn.send_chat(story)
        await listener.until(lambda: listener.first_sound(sent) is not None, REPLY_TIMEOUT)
        await asyncio.sleep(delay)
        # Speak while the avatar's sound is arriving (not in one of its pauses between sentences).
        await listener.until(lambda: listener.audio[-1][1] > THRESHOLD, END_TIMEOUT)
        pushed = loop.time()
        onset_position = mic.push_speech(speech.samples) + speech.first_voiced

        def stopped() -> bool:
            return any(at > pushed for at in listener.events("audio_end"))

        with contextlib.suppress(TimeoutError):
            await listener.until(stopped, BARGE_TIMEOUT)
        barged = stopped()
        # The interrupting speech is transcribed once it ends, then retold (retelling mode): that reply is cut
        # at once, it is not measured.
        with contextlib.suppress(TimeoutError):
            await listener.until(lambda: found(listener, pushed, is_user_chat) is not None, REPLY_TIMEOUT)
        await conn.interrupt()
        if not barged:
            await listener.until(stopped, END_TIMEOUT)
        await asyncio.sleep(0.3)
        onset = mic.time_of(onset_position)
        assert onset is not None
        end_event = next(at for at in listener.events("audio_end") if at > pushed)
        # Sound of the story arriving after the onset went out; the retelling's audio_start (if it began before
        # the interrupt) bounds it: the retelling's own sound comes after its audio_start.
        retold = listener.first_message(end_event, lambda m: event_name(m) == "audio_start")
        bound = retold if retold is not None else loop.time()
        loud = [at for at, level in listener.audio if onset <= at < bound and level > THRESHOLD]
        silent_at = next((at for at, _ in listener.audio if loud and at > loud[-1]), None)
        records = (await self.barge_ins(listener.stream.session_id))[before:]
        heard = found(listener, pushed, is_user_chat)
        return {
            "text": speech.text,
            "barged": barged and len(records) == 1,
            "client_ms": ms_since(onset, silent_at) if silent_at is not None else None,
            "already_silent": not loud,
            "onset_to_audio_end_event_ms": ms_since(onset, end_event),
            "server_ms": 1000 * (records[0]["silent_from"] - records[0]["onset"]) if len(records) == 1 else None,
            "server_records": records,
            "story_heard_s": round(pushed - (listener.first_sound(sent) or pushed), 3),
            "transcript": str(heard[1]["pld"].get("text", "")) if heard is not None else None,
        }

    # --- protocol ----------------------------------------------------------------------------------

    async def close(self) -> Reply:
        """Nothing is held between requests."""
        return {"closed": 0}

    async def handle(self, request: Reply) -> Reply:
        """Answer one request."""
        op = request.get("op")
        silence = request.get("silence_ms")
        silence_ms = int(silence) if silence is not None else None
        if op == "prepare":
            return await self.prepare(list(request["texts"]))
        if op == "converse":
            return await self.converse(
                int(request["mode"]),
                list(request["utterances"]),
                str(request["warmup"]) if request.get("warmup") is not None else None,
                float(request["listen"]),
                silence_ms,
            )
        if op == "barge_in":
            return await self.barge_in(
                str(request["story"]), list(request["utterances"]), float(request["delay"]), silence_ms
            )
        raise ValueError(f"unknown op {op!r}")


def main() -> None:
    """Entry point: `voice_client.py URL API_KEY`."""
    url, api_key = sys.argv[1], sys.argv[2]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, api_key, lambda api: VoiceWorker(api, url, api_key)))


if __name__ == "__main__":
    main()
