"""Speech roles: what a text-to-speech backend gives the rest of the pipeline."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError

SILENCE: Final = "_"
"""The phoneme of a pause (punctuation, leading or trailing silence) in PhonemeTiming."""
WORD_GAP: Final = " "
"""The phoneme of a gap between words: Piper gives it frames, but speech often runs on through it."""

MIN_SPEED: Final = 0.8
MAX_SPEED: Final = 1.2
"""Speaking-rate range of the API's `voice_params.speed` (1.0 is the voice's own rate)."""


class Abandon:
    """Tells a blocking synthesis, from another thread, that nobody waits for its result any more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: list[Callable[[], None]] = []

    def set(self) -> None:
        """Abandon the work: run the hooks registered so far (once), and any registered later at once."""
        with self._lock:
            if self._set:
                return
            self._set, hooks, self._hooks = True, self._hooks, []
        for hook in hooks:
            hook()

    def on_set(self, hook: Callable[[], None]) -> None:
        """Call `hook` (from whichever thread abandons the work) when it is abandoned; now if it already is."""
        with self._lock:
            if not self._set:
                self._hooks.append(hook)
                return
        hook()


@dataclass(frozen=True)
class PhonemeTiming:
    """One phoneme (IPA) and when it sounds, in seconds from the start of its chunk."""

    phoneme: str
    start: float
    duration: float

    @property
    def end(self) -> float:
        """When the phoneme stops sounding, in seconds from the start of its chunk."""
        return self.start + self.duration


@dataclass(frozen=True)
class SpeechChunk:
    """Audio for one piece of text (usually a sentence), with phoneme timings where the voice has them."""

    text: str
    audio: npt.NDArray[np.int16]
    """Mono signed 16-bit samples."""
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...] = ()
    """Contiguous from 0 to `duration` when given; pauses are `SILENCE`, word gaps `WORD_GAP`."""

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate


@dataclass(frozen=True)
class Voice:
    """An installed voice, as the voice list API shows it."""

    voice_id: str
    name: str
    language: str
    """Language code as the language list uses it, e.g. `en`, `de`, `pt-BR`."""
    locale: str
    gender: Literal["male", "female", "neutral"]
    engine: str
    language_name: str
    engine_voice: str = ""
    """The engine's own name for the voice (espeak-ng voice file, Piper model name)."""
    aliases: tuple[str, ...] = ()
    """Further language codes this voice is the engine's first choice for (e.g. `zh` for Mandarin)."""


class TTS(Protocol):
    """A text-to-speech backend; one instance per process, shared by all sessions."""

    def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        speed: float = 1.0,
        pron_map: Mapping[str, str] | None = None,
        due: float | None = None,
        rate: int | None = None,
    ) -> AsyncIterator[SpeechChunk]:
        """Yield speech sentence by sentence: the first chunk comes as soon as it is ready.

        `due`: when (`time.perf_counter` seconds) the caller's queued speech runs out (None: now); a backend
        shared by sessions serves the earliest first. `rate`: the sample rate the chunks should come at
        (None: the voice's own), so that resampling happens where the synthesis does, off the event loop.
        """
        ...


def check_speed(speed: float) -> float:
    """Return `speed` if it lies in MIN_SPEED..MAX_SPEED, else raise ParamError."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ParamError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return speed


def timings_from_segments(segments: Iterable[tuple[str, int]], sample_rate: int) -> tuple[PhonemeTiming, ...]:
    """Turn contiguous (phoneme, sample count) segments starting at sample 0 into PhonemeTimings."""
    timings: list[PhonemeTiming] = []
    position = 0
    for phoneme, samples in segments:
        if samples <= 0:
            continue
        timings.append(PhonemeTiming(phoneme, position / sample_rate, samples / sample_rate))
        position += samples
    return tuple(timings)


def merge_silences(segments: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Join neighbouring SILENCE and WORD_GAP segments (a run with any SILENCE is SILENCE); drop empty ones."""
    merged: list[tuple[str, int]] = []
    quiet = (SILENCE, WORD_GAP)
    for phoneme, samples in segments:
        if samples <= 0:
            continue
        if merged and phoneme in quiet and merged[-1][0] in quiet:
            kind = WORD_GAP if phoneme == merged[-1][0] == WORD_GAP else SILENCE
            merged[-1] = (kind, merged[-1][1] + samples)
        else:
            merged.append((phoneme, samples))
    return merged
