"""A deterministic TTS for timing-precise tests: scripted phonemes, synthetic audio, optional delay."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from liveavatar.speech.base import (
    SILENCE,
    WORD_GAP,
    SpeechChunk,
    Voice,
    check_speed,
    timings_from_segments,
)
from liveavatar.speech.resample import resample
from liveavatar.speech.text import apply_pron_map, split_sentences

FAKE_VOICE: Final = Voice(
    voice_id="fake-en",
    name="Fake",
    language="en",
    locale="en-US",
    gender="neutral",
    engine="fake",
    language_name="English",
)
"""The voice FakeTTS speaks with (any voice is accepted)."""

VOWELS: Final = frozenset("aeiouy")


@dataclass(frozen=True)
class FakeRequest:
    """One call of FakeTTS.synthesize, as recorded for assertions."""

    text: str
    voice_id: str
    speed: float
    pron_map: Mapping[str, str] = field(default_factory=dict)
    due: float | None = None


class FakeTTS:
    """One phoneme per letter or digit (`phoneme_s / speed` each), a pause per gap, a tone per phoneme.

    Each run of other characters gives one pause of `pause_s / speed`: WORD_GAP if it is only
    whitespace, else SILENCE.
    """

    engine = "fake"

    def __init__(
        self,
        *,
        phoneme_s: float = 0.08,
        pause_s: float = 0.04,
        sample_rate: int = 22050,
        delay_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.phoneme_s = phoneme_s
        self.pause_s = pause_s
        self.sample_rate = sample_rate
        self.delay_s = delay_s
        """Awaited (through `sleep`) before each sentence's chunk, to play a slow backend."""
        self._sleep = sleep
        self.requests: list[FakeRequest] = []

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
        """Yield one scripted chunk per sentence, each after the injected delay (at `rate` when given)."""
        check_speed(speed)
        self.requests.append(FakeRequest(text, voice.voice_id, speed, dict(pron_map or {}), due))
        for sentence in split_sentences(text):
            if self.delay_s > 0:
                await self._sleep(self.delay_s)
            chunk = self.chunk_for(sentence, speed=speed, pron_map=pron_map)
            if rate is not None and rate != chunk.sample_rate:
                chunk = replace(chunk, audio=resample(chunk.audio, chunk.sample_rate, rate), sample_rate=rate)
            yield chunk

    def chunk_for(self, sentence: str, *, speed: float = 1.0, pron_map: Mapping[str, str] | None = None) -> SpeechChunk:
        """The chunk this fake gives for one sentence (what synthesize yields for it)."""
        phoneme_n = max(1, round(self.sample_rate * self.phoneme_s / speed))
        pause_n = max(1, round(self.sample_rate * self.pause_s / speed))
        segments: list[tuple[str, int]] = []
        for run in re.findall(r"[^\W_]|[\W_]+", apply_pron_map(sentence, pron_map).lower()):
            if run.isalnum():
                segments.append((run, phoneme_n))
            else:
                segments.append((WORD_GAP if run.isspace() else SILENCE, pause_n))
        audio = np.concatenate([self._tone(phoneme, n) for phoneme, n in segments]) if segments else _EMPTY
        timings = timings_from_segments(segments, self.sample_rate)
        return SpeechChunk(sentence, audio, self.sample_rate, timings)

    def _tone(self, phoneme: str, samples: int) -> npt.NDArray[np.int16]:
        if phoneme in (SILENCE, WORD_GAP):
            return np.zeros(samples, dtype=np.int16)
        # A tone per phoneme under a half-sine envelope; vowels louder, so energy follows the script.
        frequency = 120.0 + 15.0 * (ord(phoneme[0]) % 32)
        amplitude = 16000.0 if phoneme in VOWELS else 6000.0
        t = np.arange(samples, dtype=np.float64)
        envelope = np.sin(np.pi * (t + 0.5) / samples)
        wave = amplitude * envelope * np.sin(2 * np.pi * frequency * t / self.sample_rate)
        return np.asarray(wave, dtype=np.int16)


_EMPTY: Final = np.zeros(0, dtype=np.int16)
