"""A Turn: one bot reply, from a text stream to speech, mouth motion and streamed bot text; interrupted as a whole."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field

from liveavatar.errors import Code
from liveavatar.media import AUDIO_RATE, Clock, Timing, untimed
from liveavatar.protocol import AUDIO_END, AUDIO_START, ChatStream, Message, error_event, event
from liveavatar.session.playback import to_playback_rate
from liveavatar.session.speaker import Speaker
from liveavatar.speech.base import TTS, WORD_GAP, PhonemeTiming, Voice

log = logging.getLogger(__name__)

LOOKAHEAD = 2.5
"""Seconds of speech synthesised ahead of playback: enough to never run dry, little enough to share the TTS."""
SPEECH_GAP_MIN = 1e-3
"""Seconds between a piece's end and the next one's start timed as a break (less is float rounding)."""
QUEUED_PIECES = 32
"""Synthesised pieces waiting to start playing (LOOKAHEAD keeps it to a few; the bound is a backstop)."""


@dataclass(frozen=True)
class TextDelta:
    """Reply text for the client now, as it is produced (dialogue mode: each piece the LLM generates)."""

    text: str


@dataclass(frozen=True)
class Sentence:
    """A complete piece of the reply to speak; `shown` when its text already went out as deltas."""

    text: str
    shown: bool = False


@dataclass(frozen=True)
class Failure:
    """The text source failed: the client gets an `error` event; whatever the source yields next is spoken."""

    code: Code
    msg: str


TextItem = TextDelta | Sentence | Failure
TextSource = AsyncGenerator[TextItem, None]
"""A turn's one input: retelling yields sentences; dialogue yields the LLM's deltas and each sentence they complete."""


@dataclass(frozen=True)
class Spoken:
    """A piece of the reply (a sentence) and when it plays on the session clock."""

    text: str
    start: float
    end: float
    phonemes: tuple[PhonemeTiming, ...] = ()
    shown: bool = False

    def heard(self, stop: float) -> str:
        """The part of the text played before `stop` (whole words: the word being said counts)."""
        if stop >= self.end:
            return self.text
        if stop <= self.start:
            return ""
        words = self.text.split()
        if any(p.phoneme == WORD_GAP for p in self.phonemes):  # espeak-ng's timings mark no word gaps
            begun = 1 + sum(1 for p in self.phonemes if p.phoneme == WORD_GAP and self.start + p.end <= stop)
        else:
            begun = math.ceil(len(words) * (stop - self.start) / (self.end - self.start))
        return " ".join(words[: min(begun, len(words))])


@dataclass
class Turn:
    """Speaks `text` through `speaker`: audio and mouth on the clock, bot text as it is produced or played.

    `start()` runs it in a task the turn owns; `wait()` returns when the last sample has played (or the
    turn was interrupted); `interrupt()` cuts the sound within one 20 ms frame, ends the task and says
    where the sound stopped. A failing TTS ends the turn with an `error` event (1201), never the session.
    """

    text: TextSource
    tts: TTS
    voice: Voice
    speaker: Speaker
    clock: Clock
    chat: ChatStream
    send_chat: Callable[[list[str]], None]
    send_event: Callable[[Message], None]
    speed: float = 1.0
    pron_map: Mapping[str, str] = field(default_factory=dict)
    timing: Timing = untimed
    owed_at: float = field(default_factory=time.perf_counter)
    """When the reply was asked for (perf_counter): the start of "reply -> first sound"."""
    pieces: list[Spoken] = field(default_factory=list)
    stopped_at: float | None = None
    """Session time the sound was cut by an interrupt; None if the turn played to its end."""
    _task: asyncio.Task[None] | None = None
    _started: bool = False
    _text_sent: bool = False
    _text_closed: bool = False

    def start(self) -> None:
        """Begin synthesising and playing the reply."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"turn-{self.chat.mid}")

    async def wait(self) -> None:
        """Until the reply has played to its end or was interrupted (cancels the turn if the caller is)."""
        if self._task is None:
            return
        try:
            await asyncio.wait([self._task])
        except asyncio.CancelledError:
            await self.interrupt()
            raise

    def cut(self) -> float:
        """Silence the reply from the next 20 ms frame (idempotent); the session time where the sound stopped."""
        if self.stopped_at is None:
            self.stopped_at = self.speaker.silence()
        return self.stopped_at

    async def interrupt(self) -> float:
        """Cut the sound now, end the turn and return the session time where the sound stopped."""
        stopped = self.cut()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        return stopped

    def heard(self) -> str:
        """What the user actually heard of this reply."""
        stop = math.inf if self.stopped_at is None else self.stopped_at
        return " ".join(part for part in (piece.heard(stop) for piece in self.pieces) if part)

    async def _run(self) -> None:
        queue: asyncio.Queue[Spoken | None] = asyncio.Queue(QUEUED_PIECES)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._synthesize(queue))
                group.create_task(self._narrate(queue))
        except asyncio.CancelledError:
            pass  # interrupted: the sound is already cut
        except Exception:
            log.exception("reply %s failed", self.chat.mid)
            self.send_event(error_event(Code.PROCESSING_ERROR, "the reply failed"))
        finally:
            self._finish()

    async def _synthesize(self, queue: asyncio.Queue[Spoken | None]) -> None:
        async with contextlib.aclosing(self.text) as items:
            async for item in items:
                if isinstance(item, TextDelta):
                    self._send_text(item.text)
                elif isinstance(item, Failure):
                    self.send_event(error_event(item.code, item.msg))
                elif not await self._speak(item, queue):
                    break
        await queue.put(None)

    async def _speak(self, sentence: Sentence, queue: asyncio.Queue[Spoken | None]) -> bool:
        """Synthesise one sentence into the speaker; False (after telling the client) when the TTS failed."""
        ahead = self.speaker.queued_until() - LOOKAHEAD
        if ahead > self.clock.now():
            await self.clock.wait_until(ahead)  # let other sessions use the TTS meanwhile
        asked = time.perf_counter()
        if not self.pieces:
            self.timing("reply_to_tts", asked - self.owed_at)
        # When this session's queued speech runs out: the shared TTS serves the session closest to silence first.
        due = asked + max(0.0, self.speaker.queued_until() - self.clock.now())
        try:
            speech = self.tts.synthesize(
                sentence.text, self.voice, speed=self.speed, pron_map=self.pron_map, due=due, rate=AUDIO_RATE
            )
            async for chunk in speech:
                first = not self.pieces
                if first:
                    self.timing("tts_first_chunk", time.perf_counter() - asked)
                # Backends resample in their synthesis thread; this is for one that gave its own rate anyway.
                samples = (
                    chunk.audio if chunk.sample_rate == AUDIO_RATE else to_playback_rate(chunk.audio, chunk.sample_rate)
                )
                start, end = self.speaker.speak(chunk, samples)
                if first:  # 0 when the audio track runs late (the frame is due already): histograms take no negatives
                    self.timing("playback_lead", max(0.0, start - self.clock.now()))
                elif start - self.pieces[-1].end > SPEECH_GAP_MIN:  # the playback ran dry: a break in the reply
                    self.timing("speech_gap", start - self.pieces[-1].end)
                piece = Spoken(chunk.text.strip(), start, end, chunk.phonemes, sentence.shown)
                self.pieces.append(piece)
                await queue.put(piece)
        except Exception as exc:
            # Whatever the engine raised, this reply cannot be spoken further; the session lives on.
            log.warning("speech synthesis failed for voice %s: %r", self.voice.voice_id, exc)
            self.send_event(error_event(Code.AUDIO_ERROR, "speech synthesis failed for this reply"))
            return False
        return True

    async def _narrate(self, queue: asyncio.Queue[Spoken | None]) -> None:
        """Release each piece's text as it starts playing (unless already shown); end when the sound does."""
        current = await queue.get()
        end = self.clock.now()
        while current is not None:
            await self.clock.wait_until(current.start)
            if not self._started:
                self._started = True
                self.send_event(event(AUDIO_START))
                self.timing("reply_to_first_sound", time.perf_counter() - self.owed_at)
            if not current.shown:
                self._send_text(" " + current.text if self._text_sent else current.text)
            end, current = current.end, await queue.get()
        self._close_text()  # all the text is out: fin now, not when the sound ends
        await self.clock.wait_until(end)

    def _send_text(self, text: str) -> None:
        if text:
            self._text_sent = True
            self.send_chat(self.chat.piece(text, last=False))

    def _close_text(self) -> None:
        if self._text_sent and not self._text_closed:
            self._text_closed = True
            self.send_chat(self.chat.piece("", last=True))  # fin carries no text: the guide's handler ignores it

    def _finish(self) -> None:
        self._close_text()  # an interrupted reply's message is closed too: clients wait for fin
        if self._started:
            self.send_event(event(AUDIO_END))
