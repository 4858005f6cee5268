"""Transcription while the user speaks: partial STT passes on the growing utterance, reused at its end.

Whisper reads a whole 30 s window whatever the audio's length, so a pass costs about the same on 1 s as on
5 s of speech. What saves time is when a pass runs: one pass starts as soon as the voice pauses (before
the configured silence has ended the turn) and becomes the turn's transcript when no voice came after it.
While the user keeps speaking, a pass every PARTIAL_EVERY_S fixes the words two passes in a row agree on;
later passes, and the final one, are given those words as a forced prefix so they only decode the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from liveavatar.speech.stt import FloatAudio, Transcript

log = logging.getLogger(__name__)

Transcribe = Callable[[FloatAudio, str], Awaitable[Transcript]]
"""16 kHz mono float audio and a forced prefix ("" for none) -> Transcript (language bound by the caller)."""

PAUSE_S: Final = 0.1
"""Voice paused this long: transcribe the utterance so far (it is the whole turn if no voice follows)."""
PARTIAL_EVERY_S: Final = 1.0
"""While the voice goes on: a pass on the utterance so far after this much more audio (at the least)."""
LONG_SPEECH_S: Final = 3.0
"""Passes while the voice goes on start once it has gone on this long.

A pass cannot be stopped, so one running when the voice stops delays the pass of the final pause; it pays
off only where the words it fixes save real decoding time at the end, i.e. in long turns."""
DUTY: Final = 0.5
"""Passes while the voice goes on keep the STT busy at most this share of the time (by recent pass times)."""
_WORD = re.compile(r"[\w']+")


class Utterance(Protocol):
    """What the partial passes read of the turn detector's current utterance."""

    @property
    def speaking(self) -> bool:
        """True while a counted utterance is open."""
        ...

    @property
    def audio_start(self) -> float:
        """Session time of the utterance audio's first sample."""
        ...

    @property
    def voice_start(self) -> float:
        """Session time the voice began."""
        ...

    @property
    def voice_end(self) -> float:
        """Session time of the end of the last voiced frame so far."""
        ...

    @property
    def heard_until(self) -> float:
        """Session time of the end of the audio judged so far."""
        ...

    def audio_so_far(self) -> FloatAudio:
        """The utterance's audio from its start to `heard_until`."""
        ...


@dataclass
class PassGate:
    """The passes of one process: how many run, and how long one takes lately (queueing included).

    Passes at a pause always start (their result is about to be needed); passes during speech are an
    extra: they start only while no other pass runs, and no more often than the STT's speed allows.
    """

    running: int = 0
    pass_s: float = 0.0
    """Moving average of recent passes' wall time."""

    def timed(self, seconds: float) -> None:
        """Count a finished pass's wall time into the average."""
        self.pass_s = seconds if not self.pass_s else 0.7 * self.pass_s + 0.3 * seconds


@dataclass(eq=False)
class _Pass:
    task: asyncio.Task[Transcript | None]
    audio_start: float
    voice_end: float
    paused: bool
    """Started in a pause: it covers every voiced frame so far and a little silence after."""
    cut: float


def agreed_prefix(earlier: str, later: str) -> str:
    """The words both texts start with (case and punctuation aside), as `later` writes them."""
    said, heard = _WORD.findall(earlier.lower()), list(_WORD.finditer(later))
    agreed = 0
    while agreed < min(len(said), len(heard)) and said[agreed] == heard[agreed].group().lower():
        agreed += 1
    if not agreed:
        return ""
    return later[: heard[agreed - 1].end()].strip()


class PartialTranscriber:
    """One session's partial passes: `follow` after each piece of audio, `final` when the turn ends."""

    def __init__(
        self,
        transcribe: Transcribe,
        gate: PassGate | None = None,
        *,
        pause_s: float = PAUSE_S,
        every_s: float = PARTIAL_EVERY_S,
        long_s: float = LONG_SPEECH_S,
    ) -> None:
        self.transcribe = transcribe
        self.gate = gate or PassGate()
        self.pause_s = pause_s
        self.every_s = every_s
        self.long_s = long_s
        self.passes = 0
        """STT passes started (partial and final)."""
        self.reused = 0
        """Turns whose transcript was a pass made before the turn ended."""
        self._latest: _Pass | None = None
        self._previous_text: str | None = None
        self._committed = ""

    @property
    def committed(self) -> str:
        """The words of the current utterance two passes agreed on (forced as the prefix of later passes)."""
        return self._committed

    def follow(self, utterance: Utterance) -> None:
        """Start a pass on the utterance so far when one is due and this session has none running."""
        if not utterance.speaking:
            return
        latest = self._latest
        if latest is not None and latest.audio_start != utterance.audio_start:
            self._forget()  # an utterance that ended without `final` (reset, or a flush nobody transcribed)
            latest = None
        if latest is not None and not latest.task.done():
            return
        now, voice_end = utterance.heard_until, utterance.voice_end
        if now - voice_end >= self.pause_s - 1e-9:
            due = latest is None or not (latest.paused and latest.voice_end >= voice_end - 1e-9)
            paused = True
        elif now - voice_end < 1e-9:  # the voice goes on (a pause that has just begun gets its own pass)
            every = max(self.every_s, self.gate.pass_s / DUTY)
            since = utterance.voice_start + self.long_s - every
            if latest is not None:
                since = max(since, latest.cut)
            due = now - since >= every - 1e-9 and not self.gate.running
            paused = False
        else:
            return
        if due:
            self._start(utterance.audio_so_far(), utterance.audio_start, voice_end, now, paused=paused)

    async def final(self, audio: FloatAudio, audio_start: float, voice_end: float) -> Transcript:
        """The transcript of the ended turn: the pass made in its last pause if no voice followed, else a new one."""
        try:
            latest = self._latest
            if latest is not None and latest.audio_start != audio_start:
                self._forget()  # passes of another utterance: nothing of theirs applies
                latest = None
            if latest is not None:
                if latest.paused and latest.voice_end >= voice_end - 1e-9:
                    done = await latest.task
                    if done is not None:
                        self.reused += 1
                        return done
                elif not latest.task.done():
                    await latest.task  # the STT runs one pass at a time anyway; its words become the prefix
            self.passes += 1
            started = time.perf_counter()
            transcript = await self.transcribe(audio, self._committed)
            self.gate.timed(time.perf_counter() - started)
            return transcript
        finally:
            self._forget()

    def cancel(self) -> None:
        """Drop the pass in flight, if any (the listener stops)."""
        self._forget()

    def _start(self, audio: FloatAudio, audio_start: float, voice_end: float, cut: float, *, paused: bool) -> None:
        self.passes += 1
        task = asyncio.create_task(self._run(audio, self._committed), name="partial-transcription")
        self._latest = _Pass(task, audio_start, voice_end, paused, cut)

    async def _run(self, audio: FloatAudio, prefix: str) -> Transcript | None:
        self.gate.running += 1
        started = time.perf_counter()
        try:
            transcript = await self.transcribe(audio, prefix)
            self.gate.timed(time.perf_counter() - started)
        except Exception:  # a failed partial costs nothing: the turn's end transcribes afresh
            log.warning("partial transcription failed", exc_info=True)
            return None
        finally:
            self.gate.running -= 1
        if self._previous_text is not None:
            agreed = agreed_prefix(self._previous_text, transcript.text)
            if len(agreed) > len(self._committed):
                self._committed = agreed
        self._previous_text = transcript.text
        return transcript

    def _forget(self) -> None:
        if self._latest is not None and not self._latest.task.done():
            self._latest.task.cancel()
        self._latest = None
        self._previous_text = None
        self._committed = ""
