"""A Turn: one bot reply, from text to speech, mouth motion and streamed bot text; cancelled as a whole."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from liveavatar.protocol import AUDIO_END, AUDIO_START, ChatStream, Message, event
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.playback import to_playback_rate
from liveavatar.speech.base import TTS, WORD_GAP, PhonemeTiming, Voice
from liveavatar.speech.text import split_sentences
from liveavatar.transport.tracks import MediaClock


@dataclass(frozen=True)
class Spoken:
    """A piece of the reply (a sentence) and when it plays on the session clock."""

    text: str
    start: float
    end: float
    phonemes: tuple[PhonemeTiming, ...] = ()

    def heard(self, stop: float) -> str:
        """The part of the text played before `stop` (whole words: the word being said counts)."""
        if stop >= self.end:
            return self.text
        if stop <= self.start:
            return ""
        words = self.text.split()
        if self.phonemes:
            begun = 1 + sum(1 for p in self.phonemes if p.phoneme == WORD_GAP and self.start + p.end <= stop)
        else:
            begun = math.ceil(len(words) * (stop - self.start) / (self.end - self.start))
        return " ".join(words[: min(begun, len(words))])


LOOKAHEAD = 2.5
"""Seconds of speech synthesised ahead of playback: enough to never run dry, little enough to share the TTS."""
FIRST_CLAUSE = 30
"""A first sentence longer than this is synthesised clause first: the first sound comes sooner."""


async def retell(text: str) -> AsyncIterator[str]:
    """Retelling mode's text source: the client's text, sentence by sentence (the first cut at a clause)."""
    for index, sentence in enumerate(split_sentences(text)):
        cut = sentence.find(", ", 4) if index == 0 and len(sentence) > FIRST_CLAUSE else -1
        if cut > 0:
            yield sentence[: cut + 1]
            sentence = sentence[cut + 2 :]
        yield sentence


@dataclass
class Turn:
    """Speaks `sentences` through `source`: audio and mouth on the clock, bot text as each sentence plays."""

    sentences: AsyncIterator[str]
    tts: TTS
    voice: Voice
    source: AvatarSource
    clock: MediaClock
    chat: ChatStream
    send_chat: Callable[[list[str]], None]
    send_event: Callable[[Message], None]
    speed: float = 1.0
    pron_map: Mapping[str, str] = field(default_factory=dict)
    narrate: bool = True
    """Send each sentence's text as it starts playing; False when the text source sends it (`say_text`)."""
    pieces: list[Spoken] = field(default_factory=list)
    stopped_at: float | None = None
    """Session time the sound was cut by an interrupt; None if the turn played to its end."""
    _started: bool = False
    _text_sent: bool = False
    _text_done: bool = False

    async def run(self) -> None:
        """Synthesise and play the whole reply; returns when its last sample has been played."""
        queue: asyncio.Queue[Spoken | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._synthesize(queue))
                group.create_task(self._narrate(queue))
        finally:
            self._finish()

    def interrupt(self) -> float:
        """Cut the sound now (within one 20 ms frame); the caller then cancels the task running `run()`."""
        if self.stopped_at is None:
            self.stopped_at = self.source.silence()
        return self.stopped_at

    def say_text(self, delta: str) -> None:
        """Stream a piece of the reply's text to the client now (dialogue mode: as the LLM generates it)."""
        if delta:
            self._send_piece(delta, last=False)

    def _send_piece(self, text: str, *, last: bool) -> None:
        self._text_sent = True
        self._text_done = last
        self.send_chat(self.chat.piece(text, last=last))

    def heard(self) -> str:
        """What the user actually heard of this reply."""
        stop = math.inf if self.stopped_at is None else self.stopped_at
        return " ".join(part for part in (piece.heard(stop) for piece in self.pieces) if part)

    async def _synthesize(self, queue: asyncio.Queue[Spoken | None]) -> None:
        try:
            async for sentence in self.sentences:
                ahead = self.source.queued_until() - LOOKAHEAD
                if ahead > self.clock.now():
                    await self.clock.wait_until(ahead)  # let other sessions use the TTS meanwhile
                speech = self.tts.synthesize(sentence, self.voice, speed=self.speed, pron_map=self.pron_map)
                async for chunk in speech:
                    start, end = self.source.speak(chunk, to_playback_rate(chunk.audio, chunk.sample_rate))
                    piece = Spoken(chunk.text.strip(), start, end, chunk.phonemes)
                    self.pieces.append(piece)
                    queue.put_nowait(piece)
        finally:
            queue.put_nowait(None)

    async def _narrate(self, queue: asyncio.Queue[Spoken | None]) -> None:
        current = await queue.get()
        end = self.clock.now()
        while current is not None:
            await self.clock.wait_until(current.start)
            if not self._started:
                self._started = True
                self.send_event(event(AUDIO_START))
            following = await queue.get()
            if self.narrate:
                last = following is None
                self._send_piece(current.text if last else current.text + " ", last=last)
            end, current = current.end, following
        await self.clock.wait_until(end)

    def _finish(self) -> None:
        if self._text_sent and not self._text_done:
            self._send_piece("", last=True)  # clients wait for fin: close an unfinished or cut-off message
        if self._started:
            self.send_event(event(AUDIO_END))
