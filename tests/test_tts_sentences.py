"""SentenceTTS, the shell around Piper and espeak-ng, over a scripted engine (the model boundary)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.speech.base import Abandon, SpeechChunk, Voice
from liveavatar.speech.scheduler import DeadlineScheduler
from liveavatar.speech.sentences import SentenceTTS

T = TypeVar("T")
VOICE = Voice("scripted-en", "Scripted", "en", "en-US", "neutral", "scripted", "English")


class ScriptedEngine:
    """Says each text as one sample per character; "silent" gives no audio, "broken" raises."""

    name = "scripted"

    def __init__(self) -> None:
        self.spoken: list[tuple[str, float]] = []

    def load(self) -> None:
        pass  # nothing to load

    def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
        self.spoken.append((text, speed))
        if "broken" in text:
            raise RuntimeError("engine fault")
        if "silent" in text:
            return SpeechChunk(text, np.zeros(0, dtype=np.int16), 16000)
        return SpeechChunk(text, np.ones(len(text), dtype=np.int16), 16000)


async def test_sentences_are_spoken_in_order_with_pron_map_and_keep_their_own_text() -> None:
    engine = ScriptedEngine()
    tts = SentenceTTS(engine)
    text = "We use SQL. This one is silent! Last one?"
    chunks = [chunk async for chunk in tts.synthesize(text, VOICE, speed=1.1, pron_map={"sql": "sequel"})]
    assert [chunk.text for chunk in chunks] == ["We use SQL.", "Last one?"]  # no audio, no chunk
    assert engine.spoken == [("We use sequel.", 1.1), ("This one is silent!", 1.1), ("Last one?", 1.1)]
    assert len(chunks[0].audio) == len("We use sequel.")


async def test_engine_errors_become_processing_errors_and_checks_come_first() -> None:
    engine = ScriptedEngine()
    tts = SentenceTTS(engine)
    with pytest.raises(ProcessingError, match="scripted could not synthesise 'A broken one.'"):
        [chunk async for chunk in tts.synthesize("A broken one.", VOICE)]
    other = Voice("piper-en-us-joe", "Joe", "en", "en-US", "male", "piper", "English")
    with pytest.raises(ParamError):
        [chunk async for chunk in tts.synthesize("Hello.", other)]
    with pytest.raises(ParamError):
        [chunk async for chunk in tts.synthesize("Hello.", VOICE, speed=3.0)]
    assert engine.spoken == [("A broken one.", 1.0)]


async def test_chunks_come_at_the_rate_asked_for_resampled_in_the_synthesis_thread() -> None:
    threads: list[str] = []

    class Recording(ScriptedEngine):
        def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
            threads.append(threading.current_thread().name)
            return SpeechChunk(text, np.full(1600, 1000, dtype=np.int16), 16000)

    tts = SentenceTTS(Recording())
    [chunk] = [chunk async for chunk in tts.synthesize("Hello.", VOICE, rate=48000)]
    assert chunk.sample_rate == 48000 and len(chunk.audio) == 4800 and chunk.duration == pytest.approx(0.1)
    assert threads == ["scripted-synthesis"]
    assert threading.current_thread().name not in threads
    [own] = [chunk async for chunk in tts.synthesize("Hello.", VOICE)]
    assert own.sample_rate == 16000


async def test_the_session_closest_to_silence_is_served_first() -> None:
    gate = threading.Event()
    spoken: list[str] = []

    class Gated(ScriptedEngine):
        def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
            gate.wait(5)
            spoken.append(text)
            return SpeechChunk(text, np.ones(16000, dtype=np.int16), 16000)  # one second each

    tts = SentenceTTS(Gated())
    now = time.perf_counter()

    async def session(text: str, due: float) -> list[str]:
        return [chunk.text async for chunk in tts.synthesize(text, VOICE, due=due)]

    busy = asyncio.create_task(session("Busy.", now))  # holds the thread until the gate opens
    await wait_for(lambda: tts.scheduler.waiting() == 0)
    calm = asyncio.create_task(session("Calm.", now + 5.0))  # 5 s of speech still queued
    urgent = asyncio.create_task(session("Urgent.", now + 0.5))  # runs dry in half a second
    fresh = asyncio.create_task(session("Fresh.", now))  # a new reply: nothing queued, due now
    late = asyncio.create_task(session("Late.", now))  # due as early, asked later: served after it
    await wait_for(lambda: tts.scheduler.waiting() == 4)
    gate.set()
    await asyncio.gather(busy, calm, urgent, fresh, late)
    assert spoken == ["Busy.", "Fresh.", "Late.", "Urgent.", "Calm."]


async def test_a_request_withdrawn_before_it_starts_is_never_synthesised() -> None:
    gate = threading.Event()
    engine = ScriptedEngine()
    scheduler = DeadlineScheduler("test")
    blocker = scheduler.submit(lambda _: gate.wait(5))
    dropped = scheduler.submit(lambda _: engine.speak("dropped", VOICE, 1.0))
    kept = scheduler.submit(lambda _: engine.speak("kept", VOICE, 1.0))
    dropped.cancel()
    await asyncio.sleep(0)  # the cancellation's callback runs on the loop
    gate.set()
    assert await blocker is True
    assert (await kept) is not None and dropped.cancelled()
    assert engine.spoken == [("kept", 1.0)]


async def test_a_request_given_up_while_it_runs_is_told_to_stop() -> None:
    scheduler = DeadlineScheduler("test")
    running, stopped = threading.Event(), threading.Event()

    def long_work(abandon: Abandon) -> str:
        running.set()
        abandon.on_set(stopped.set)
        return "stopped early" if stopped.wait(5) else "ran to the end"

    given_up = scheduler.submit(long_work)
    after = scheduler.submit(lambda abandon: "next")
    await asyncio.to_thread(running.wait, 5)
    given_up.cancel()
    assert await after == "next"  # served as soon as the abandoned work gave up the thread
    assert stopped.is_set() and given_up.cancelled()
    late = Abandon()
    late.set()
    calls: list[int] = []
    late.on_set(lambda: calls.append(1))  # a hook registered after the fact runs at once
    assert calls == [1]


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds (the synthesis thread's state, seen from the loop)."""
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def test_a_later_sentence_is_due_as_much_later_as_the_audio_before_it_lasts() -> None:
    dues: list[float | None] = []

    class Recording(DeadlineScheduler):
        def submit(self, work: Callable[[Abandon], T], due: float | None = None) -> asyncio.Future[T]:
            dues.append(due)
            return super().submit(work, due)

    tts = SentenceTTS(ScriptedEngine())  # one sample per character at 16 kHz
    tts.scheduler = Recording("recording")
    chunks = [chunk async for chunk in tts.synthesize("One two. Three four five.", VOICE, due=100.0)]
    assert dues == [100.0, pytest.approx(100.0 + chunks[0].duration)]
