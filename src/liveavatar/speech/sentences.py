"""The one `synthesize()` for engines that speak a sentence at a time (Piper, espeak-ng).

`SentenceTTS` does everything around the engine call: the voice and speed checks, the sentence split,
pron_map, one synthesis thread per engine shared by all sessions and served earliest deadline first
(speech/scheduler.py), resampling to the caller's rate in that thread, one sentence of look-ahead, and
turning the engine's own exceptions into the project's. An engine supplies only its name and `speak()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol

from liveavatar.errors import LiveAvatarError, ParamError, ProcessingError
from liveavatar.speech.base import Abandon, SpeechChunk, Voice, check_speed
from liveavatar.speech.resample import resample
from liveavatar.speech.scheduler import DeadlineScheduler
from liveavatar.speech.text import apply_pron_map, split_sentences


class SentenceEngine(Protocol):
    """A blocking text-to-speech engine that speaks one sentence per call."""

    @property
    def name(self) -> str:
        """The engine name voices carry in `Voice.engine` (e.g. `piper`)."""
        ...

    def load(self) -> None:
        """Load what the engine needs now (blocking), so the first sentence does not wait for it."""
        ...

    def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
        """Speak `text` (pron_map already applied) with `voice`; None when it gives no audio.

        Called from one thread at a time. May raise anything: SentenceTTS maps what is not already a
        project error to ProcessingError. `abandon`, when set (from another thread), means nobody wants the
        result any more: a slow engine stops early by raising.
        """
        ...


class SentenceTTS:
    """The TTS Protocol over a sentence engine; one synthesis at a time (the model is shared, cores are few)."""

    def __init__(self, engine: SentenceEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self.scheduler = DeadlineScheduler(engine.name)

    def load(self) -> None:
        """Load the engine now (blocking; call it from a worker thread at startup)."""
        self.engine.load()

    async def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        pron_map: Mapping[str, str] | None = None,
        due: float | None = None,
        rate: int | None = None,
    ) -> AsyncIterator[SpeechChunk]:
        """Yield one chunk per sentence; the next sentence is synthesised while this one is consumed.

        `due`: when (perf_counter seconds) the caller's queued speech runs out, None for now; a later
        sentence is due that much later as the audio before it lasts. `rate`: the sample rate wanted
        (resampled in the synthesis thread); None keeps the voice's own.
        """
        self._check_voice(voice)
        check_speed(speed)
        pron = dict(pron_map or {})
        first_due = time.perf_counter() if due is None else due

        def synthesize_one(sentence: str, abandon: Abandon) -> SpeechChunk | None:
            chunk = self.synthesize_sentence(sentence, voice, speed=speed, pron_map=pron, abandon=abandon)
            if chunk is None or rate is None or chunk.sample_rate == rate:
                return chunk
            return dataclasses.replace(chunk, audio=resample(chunk.audio, chunk.sample_rate, rate), sample_rate=rate)

        def start(sentence: str, after: float) -> asyncio.Future[SpeechChunk | None]:
            return self.scheduler.submit(lambda abandon: synthesize_one(sentence, abandon), first_due + after)

        async for chunk in stream_sentences(split_sentences(text), start):
            yield chunk

    def synthesize_sentence(
        self,
        sentence: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        pron_map: Mapping[str, str] | None = None,
        abandon: Abandon | None = None,
    ) -> SpeechChunk | None:
        """Synthesise one sentence (blocking); None when it gives no audio. The chunk's text is `sentence`."""
        self._check_voice(voice)
        spoken = apply_pron_map(sentence, pron_map)
        with self._lock:
            try:
                chunk = self.engine.speak(spoken, voice, speed, abandon)
            except LiveAvatarError:
                raise
            except Exception as exc:  # onnxruntime, phonemizer and ctypes errors share no base class
                raise ProcessingError(f"{self.engine.name} could not synthesise {sentence[:40]!r}: {exc}") from exc
        if chunk is None or len(chunk.audio) == 0:
            return None
        return dataclasses.replace(chunk, text=sentence)  # the text the user sees, not the pron_map'ed one

    def _check_voice(self, voice: Voice) -> None:
        if voice.engine != self.engine.name:
            raise ParamError(f"voice {voice.voice_id} is an {voice.engine} voice, not a {self.engine.name} one")


async def stream_sentences(
    sentences: Sequence[str], start: Callable[[str, float], asyncio.Future[SpeechChunk | None]]
) -> AsyncIterator[SpeechChunk]:
    """Chunks of `sentences` as `start` synthesises them off the loop, one sentence ahead of the consumer.

    `start(sentence, after)` is given the seconds of audio the sentences before it gave. Sentence n+1 is
    synthesised while the consumer handles chunk n; sentences that give no audio are skipped. Closing the
    iterator cancels the look-ahead (a sentence already running in its thread is abandoned: see DeadlineScheduler).
    """
    if not sentences:
        return
    pending = start(sentences[0], 0.0)
    spoken = 0.0
    try:
        for index in range(len(sentences)):
            chunk = await pending
            if chunk is not None:
                spoken += chunk.duration
            if index + 1 < len(sentences):
                pending = start(sentences[index + 1], spoken)
            if chunk is not None and len(chunk.audio) > 0:
                yield chunk
    finally:
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled():
            pending.exception()  # a look-ahead that failed after the consumer left: nobody to tell
