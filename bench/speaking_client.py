"""Measuring client for bench/speaking.py: joins retelling sessions, makes the avatar speak, times what comes back.

Run by the bench, not by hand: `python bench/speaking_client.py URL API_KEY`. It reads one JSON request per
line on stdin and answers each with one JSON line on stdout; it exits on `{"op": "quit"}` or end of input.

    {"op": "latency", "sentences": [...], "warmup": "..."} -> {"first_sound_ms": [...], "audio_start_ms": [...], ...}
    {"op": "add", "count": 2}            -> {"sessions": 4, "first_frame_ms": [...]}  (each keeps talking)
    {"op": "measure", "seconds": 8}      -> {"sessions": [{"frames", "intervals_ms", "audio_gaps", ...}, ...]}
    {"op": "close"}                      -> {"closed": 4}

`python bench/speaking_client.py --tts-probe SENTENCES_JSON` instead times Piper on each sentence in this
process (no server involved) and prints one JSON line: how long synthesis takes, and the silence Piper puts
before the first sound.

Sound is a decoded 20 ms frame whose peak |sample| exceeds THRESHOLD; the idle avatar sends digital silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from liveavatar.client import LiveAvatarApi
from liveavatar.client.connection import Message
from transport_client import Stream, join_session, ms_since, serve

THRESHOLD = 500
"""A decoded frame whose peak |sample| is above this carries sound."""
CREATE_PARAMS: dict[str, Any] = {"mode_type": 1, "voice_id": "piper-en-us-joe", "language": "en"}
"""Retelling mode (the avatar speaks the client's text) with the packaged Piper voice."""
AUDIO_FRAME_MS = 20.0
AUDIO_GAP_MS = 60.0
"""Audio frames arriving further apart than this count as a gap (a 20 ms frame is due every 20 ms)."""
SPEECH_GAP_MS = 500.0
"""A silence inside a reply longer than this is a speech gap (Piper's own pauses stay under it)."""
END_MARGIN = 0.5
"""Seconds before an `audio_end` where a silence counts as the reply's end, not a gap in it."""
IDLE_BEFORE_CHAT = 0.6
"""Seconds a latency session stays idle before each timed chat (the previous reply has fully played)."""
REPLY_TIMEOUT = 60.0
Reply = dict[str, Any]

PARAGRAPHS = (
    "The morning train was late again, so I walked along the river instead. The water was calm and grey, "
    "and a few boats were already out. A man on the bridge was feeding the birds, and they followed him all "
    "the way to the other side. By the time I reached the office, the sun had come out and the day felt "
    "brighter. I decided that walking might be the better way to start every morning.",
    "Our team has been working on a new feature for the past few weeks. It lets people ask questions in "
    "plain language and get a spoken answer within a second or two. The hardest part was keeping the voice "
    "and the picture in step, because people notice even a small delay. We tested it with twenty users, and "
    "most of them said it felt like talking to a real person.",
    "If you are planning a trip to the mountains, pack more layers than you think you need. The weather "
    "changes quickly, and a sunny valley can turn into a cold and windy ridge within an hour. Bring plenty "
    "of water, a map, and something warm to eat. Tell someone where you are going and when you expect to "
    "be back. Most of all, enjoy the view and take your time.",
)


def peak(frame: av.AudioFrame) -> int:
    """The largest |sample| of a decoded s16 frame."""
    samples = frame.to_ndarray()
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


def event_name(message: Message) -> str | None:
    """The event name of an event message (`audio_start`, `audio_end`), else None."""
    if message.get("type") != "event":
        return None
    name = message.get("pld", {}).get("event")
    return str(name) if name is not None else None


def is_bot_chat(message: Message) -> bool:
    """A chunk of the avatar's reply text."""
    return message.get("type") == "chat" and message.get("pld", {}).get("from") == "bot"


@dataclass
class Listener:
    """Records every decoded audio frame (arrival time, peak) and every message (arrival time) of a session."""

    stream: Stream
    on_message: Callable[[float, Message], None] | None = None
    audio: list[tuple[float, int]] = field(default_factory=list)
    messages: list[tuple[float, Message]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start reading the session's audio queue and messages (and counting its video frames)."""
        self.stream.start_counting()
        name = self.stream.session_id
        self._tasks = [
            asyncio.create_task(self._read_audio(), name=f"audio-{name}"),
            asyncio.create_task(self._read_messages(), name=f"messages-{name}"),
        ]

    async def _read_audio(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.stream.conn.audio.get()
            self.audio.append((loop.time(), peak(frame)))
            self._changed.set()

    async def _read_messages(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await self.stream.conn.messages.get()
            now = loop.time()
            self.messages.append((now, message))
            self._changed.set()
            if self.on_message is not None:
                self.on_message(now, message)

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until `done()` is true, checking whenever a frame or message arrives."""
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def first_sound(self, after: float) -> float | None:
        """Arrival time of the first frame with sound after loop time `after`."""
        return next((at for at, level in self.audio if at >= after and level > THRESHOLD), None)

    def first_message(self, after: float, match: Callable[[Message], bool]) -> float | None:
        """Arrival time of the first message after `after` that matches."""
        return next((at for at, message in self.messages if at >= after and match(message)), None)

    def events(self, name: str) -> list[float]:
        """Arrival times of every event `name` so far."""
        return [at for at, message in self.messages if event_name(message) == name]

    async def aclose(self) -> None:
        """Stop reading."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Talker:
    """A session kept talking: a new paragraph as soon as the previous reply's `audio_end` arrives."""

    listener: Listener
    paragraphs: Iterator[str]
    sent: list[float] = field(default_factory=list)
    reported: set[int] = field(default_factory=set)
    """Indexes into `sent` whose first sound has been reported already."""

    @classmethod
    def start(cls, stream: Stream, offset: int) -> Talker:
        """Start listening and talking (paragraphs in turn, starting at `offset`)."""
        paragraphs = itertools.islice(itertools.cycle(PARAGRAPHS), offset % len(PARAGRAPHS), None)
        talker = cls(Listener(stream), paragraphs)
        talker.listener.on_message = talker._on_message
        talker.listener.start()
        talker.say_next()
        return talker

    def say_next(self) -> None:
        """Send the next paragraph now."""
        self.sent.append(asyncio.get_running_loop().time())
        self.listener.stream.conn.send_chat(next(self.paragraphs))

    def _on_message(self, at: float, message: Message) -> None:
        if event_name(message) == "audio_end":
            self.say_next()

    def window(self, start: float, end: float) -> Reply:
        """Video (as transport_client's Stream) and audio/speech figures between loop times `start` and `end`.

        `turn_start_ms` (paragraph sent -> first sound) has every paragraph not reported before whose first sound
        arrived by `end`, joins and settling included: a paragraph lasts longer than a window.
        """
        video = self.listener.stream.window(end - start)
        audio = [(at, level) for at, level in self.listener.audio if start <= at < end]
        intervals = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(audio)]
        ends = self.listener.events("audio_end")
        starts = [at for at in self.listener.events("audio_start") if at < end]
        return {
            **video,
            "audio_frames": len(audio),
            "audio_gaps": sum(1 for interval in intervals if interval > AUDIO_GAP_MS),
            "audio_gap_max_ms": round(max(intervals, default=0.0), 3),
            "sound_pct": 100.0 * sum(1 for _, level in audio if level > THRESHOLD) / max(len(audio), 1),
            "speaking_pct": 100.0 * speaking_seconds(starts, ends, start, end) / max(end - start, 1e-9),
            **speech_gaps(audio, ends),
            "turn_start_ms": self._turn_starts(end),
            "turns_ended": sum(1 for at in ends if start <= at < end),
        }

    def _turn_starts(self, end: float) -> list[float]:
        # The previous reply's last frames still arrive after its audio_end (the client's jitter buffer): the
        # first sound of a paragraph is the first one after the audio_start that follows it.
        starts: list[float] = []
        for index, sent in enumerate(self.sent):
            if index in self.reported:
                continue
            began = self.listener.first_message(sent, lambda m: event_name(m) == "audio_start")
            sound = self.listener.first_sound(began) if began is not None else None
            if sound is not None and sound < end:
                starts.append(ms_since(sent, sound))
                self.reported.add(index)
        return starts

    async def aclose(self, api: LiveAvatarApi) -> None:
        """Stop listening, leave and close the session."""
        await self.listener.aclose()
        await self.listener.stream.aclose(api)


def speaking_seconds(starts: list[float], ends: list[float], lo: float, hi: float) -> float:
    """Seconds of [lo, hi) that lie inside a reply (from an `audio_start` to the `audio_end` after it)."""
    total = 0.0
    for begin in starts:
        finish = next((at for at in ends if at > begin), hi)
        total += max(0.0, min(finish, hi) - max(begin, lo))
    return total


def speech_gaps(audio: list[tuple[float, int]], ends: list[float]) -> Reply:
    """Silences inside replies: count of those over SPEECH_GAP_MS and the longest (media time: frames x 20 ms)."""
    gaps: list[float] = []
    last_sound: tuple[int, float] | None = None  # index and arrival time of the last frame with sound
    for index, (at, level) in enumerate(audio):
        if level <= THRESHOLD:
            continue
        if last_sound is not None:
            silent_ms = (index - last_sound[0] - 1) * AUDIO_FRAME_MS
            reply_ended = any(last_sound[1] - END_MARGIN <= end <= at for end in ends)
            if silent_ms > 0 and not reply_ended:
                gaps.append(silent_ms)
        last_sound = (index, at)
    return {
        "speech_gaps": sum(1 for gap in gaps if gap > SPEECH_GAP_MS),
        "longest_silence_ms": max(gaps, default=0.0),
    }


class SpeakingWorker:
    """Holds this process's talking sessions and answers the bench's requests."""

    def __init__(self, api: LiveAvatarApi) -> None:
        self.api = api
        self.talkers: list[Talker] = []
        self._joined = 0
        self._window_start = 0.0

    async def latency(self, sentences: list[str], warmup: str) -> Reply:
        """On one idle joined session: chat -> first sound (and -> audio_start, -> first bot text) per sentence."""
        stream, _, _ = await join_session(self.api, **CREATE_PARAMS)
        listener = Listener(stream)
        listener.start()
        try:
            cold = await self._speak_once(listener, warmup) if warmup else None
            timed = [await self._speak_once(listener, sentence) for sentence in sentences]
        finally:
            await listener.aclose()
            await stream.aclose(self.api)
        return {
            "cold": cold,
            **{key: [one[key] for one in timed] for key in ("first_sound_ms", "audio_start_ms", "first_chat_ms")},
        }

    async def _speak_once(self, listener: Listener, text: str) -> Reply:
        await asyncio.sleep(IDLE_BEFORE_CHAT)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        listener.stream.conn.send_chat(text)

        def ended() -> bool:
            return listener.first_sound(sent) is not None and any(at > sent for at in listener.events("audio_end"))

        await listener.until(ended, REPLY_TIMEOUT)
        sound = listener.first_sound(sent)
        started = listener.first_message(sent, lambda m: event_name(m) == "audio_start")
        chat = listener.first_message(sent, is_bot_chat)
        assert sound is not None
        return {
            "first_sound_ms": ms_since(sent, sound),
            "audio_start_ms": ms_since(sent, started) if started is not None else None,
            "first_chat_ms": ms_since(sent, chat) if chat is not None else None,
        }

    async def add(self, count: int) -> Reply:
        """Join `count` more sessions, each talking from the moment it is joined until `close`."""
        first_ms: list[float] = []
        for _ in range(count):
            stream, _, first = await join_session(self.api, **CREATE_PARAMS)
            self.talkers.append(Talker.start(stream, self._joined))
            self._joined += 1
            first_ms.append(first)
        return {"sessions": len(self.talkers), "first_frame_ms": first_ms}

    async def measure(self, seconds: float) -> Reply:
        """What every held session receives over the next `seconds`."""
        loop = asyncio.get_running_loop()
        for talker in self.talkers:
            talker.listener.stream.reset()
        start = loop.time()
        await asyncio.sleep(seconds)
        end = loop.time()
        return {"sessions": [talker.window(start, end) for talker in self.talkers]}

    async def close(self) -> Reply:
        """Leave and close every held session."""
        talkers, self.talkers = self.talkers, []
        for talker in talkers:
            await talker.aclose(self.api)
        return {"closed": len(talkers)}

    async def handle(self, request: Reply) -> Reply:
        """Answer one request."""
        op = request.get("op")
        if op == "latency":
            return await self.latency(list(request["sentences"]), str(request["warmup"]))
        if op == "add":
            return await self.add(int(request["count"]))
        if op == "measure":
            return await self.measure(float(request["seconds"]))
        if op == "close":
            return await self.close()
        raise ValueError(f"unknown op {op!r}")


def tts_probe(sentences: list[str]) -> Reply:
    """Piper in this process: load time, then per sentence synthesis ms, audio ms and leading silence ms.

    Also the reply's first piece (`split_sentences(first_clause=True)[0]`, what a Turn synthesises first) of
    each sentence, timed right after the whole sentence so both see the same machine.
    """
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.piper_int8 import default_int8_dir
    from liveavatar.speech.text import split_sentences
    from liveavatar.speech.voices import PIPER_JOE

    started = time.perf_counter()
    tts = PiperEngine(int8_dir=default_int8_dir())  # as the server speaks by default
    tts.load()
    load_s = time.perf_counter() - started
    tts.speak(sentences[0], PIPER_JOE, 1.0)  # first run pays onnxruntime's set-up
    out: Reply = {"load_s": load_s, "synth_ms": [], "audio_ms": [], "leading_silence_ms": [], "first_piece_ms": []}
    for sentence in sentences:
        started = time.perf_counter()
        chunk = tts.speak(sentence, PIPER_JOE, 1.0)
        out["synth_ms"].append((time.perf_counter() - started) * 1000)
        try:
            first_piece = split_sentences(sentence, first_clause=True)[0]
        except TypeError:  # a source tree from before first-piece splitting (a "before" run): the whole sentence
            first_piece = sentence
        started = time.perf_counter()
        tts.speak(first_piece, PIPER_JOE, 1.0)
        out["first_piece_ms"].append((time.perf_counter() - started) * 1000)
        if chunk is None:
            continue
        loud = np.flatnonzero(np.abs(chunk.audio.astype(np.int32)) > THRESHOLD)
        out["audio_ms"].append(1000 * len(chunk.audio) / chunk.sample_rate)
        out["leading_silence_ms"].append(1000 * (loud[0] if len(loud) else len(chunk.audio)) / chunk.sample_rate)
    return out


async def schedule_probe(sessions: int, seconds: float) -> Reply:
    """`sessions` Turns in this process share one Piper (as a server's sessions do), each retelling paragraphs
    back to back for `seconds` with its audio read in real time: how often synthesis fell behind playback.

    No WebRTC, video or clients: only the speech path (text -> shared TTS -> speaker -> 20 ms frames). A
    piece that reaches its speaker after the speech queued before it ran out is a "late piece"; the audio
    track meanwhile played silence inside the reply (its length is the "dry" time).
    """
    from liveavatar.media import AUDIO_PTIME, MediaClock
    from liveavatar.protocol import ChatStream
    from liveavatar.session.conversation import retell
    from liveavatar.session.speaker import Speaker
    from liveavatar.session.turn import Turn
    from liveavatar.speech.voices import PIPER_JOE, default_registry

    tts = default_registry().tts_for(PIPER_JOE)
    await asyncio.to_thread(default_registry().warm_up)
    late: list[float] = []
    first_ms: list[float] = []
    stop = time.perf_counter() + seconds

    async def session(index: int) -> None:
        clock, speaker = MediaClock(), Speaker()
        original = speaker.speak
        previous_end: list[float] = []  # the end of the reply's last piece so far (empty at a reply's start)

        def speak(chunk: Any, samples: Any) -> tuple[float, float]:
            if previous_end and clock.now() > previous_end[0]:
                late.append(clock.now() - previous_end[0])
            start, end = original(chunk, samples)
            previous_end[:] = [end]
            return start, end

        speaker.speak = speak  # type: ignore[method-assign]

        async def track() -> None:
            for frame in itertools.count():
                await clock.wait_until(frame * AUDIO_PTIME)
                speaker.audio_frame()

        def timing(stage: str, value: float) -> None:
            if stage == "reply_to_first_sound":
                first_ms.append(1000 * value)

        reader = asyncio.create_task(track())
        try:
            paragraphs = itertools.islice(itertools.cycle(PARAGRAPHS), index % len(PARAGRAPHS), None)
            for paragraph in paragraphs:
                if time.perf_counter() > stop:
                    break
                turn = Turn(
                    retell(paragraph), tts=tts, voice=PIPER_JOE, speaker=speaker, clock=clock,
                    chat=ChatStream(f"probe-{index}", "bot"), send_chat=lambda _: None, send_event=lambda _: None,
                    timing=timing,
                )  # fmt: skip
                previous_end.clear()
                turn.start()
                await turn.wait()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    started = time.perf_counter()
    await asyncio.gather(*(session(i) for i in range(sessions)))
    return {
        "sessions": sessions,
        "seconds": time.perf_counter() - started,
        "late_pieces": len(late),
        "dry_ms": [1000 * value for value in late],
        "turn_first_sound_ms": first_ms,
    }


def main() -> None:
    """Entry point: `speaking_client.py URL API_KEY`, or `speaking_client.py --tts-probe SENTENCES_JSON`."""
    if sys.argv[1] == "--tts-probe":
        print(json.dumps(tts_probe(json.loads(sys.argv[2]))), flush=True)
        return
    if sys.argv[1] == "--schedule-probe":
        print(json.dumps(asyncio.run(schedule_probe(int(sys.argv[2]), float(sys.argv[3])))), flush=True)
        return
    url, api_key = sys.argv[1], sys.argv[2]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, api_key, SpeakingWorker))


if __name__ == "__main__":
    main()
