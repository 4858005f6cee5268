"""A session's conversation: the replies it owes, one Turn at a time, and the record of what was heard."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import av
import cv2

from liveavatar.clock import new_id
from liveavatar.errors import RateLimited
from liveavatar.media import Clock, Timing, untimed
from liveavatar.protocol import ChatStream, Message
from liveavatar.session.dialogue import Dialogue
from liveavatar.session.settings import SessionSettings
from liveavatar.session.speaker import Speaker
from liveavatar.session.turn import Sentence, TextSource, Turn
from liveavatar.speech.base import Voice
from liveavatar.speech.text import split_sentences
from liveavatar.speech.voices import VoiceRegistry

log = logging.getLogger(__name__)

MAX_QUEUED_REPLIES = 16
"""Replies a session may owe at once; more are refused (1005) until the avatar catches up or is interrupted."""


async def retell(text: str) -> TextSource:
    """Retelling mode's text source: the client's text, sentence by sentence (the first piece a clause)."""
    for sentence in split_sentences(text, first_clause=True):
        yield Sentence(sentence)


def voice_for(voices: VoiceRegistry, settings: SessionSettings) -> Voice:
    """The session's voice: the one chosen, else the avatar's (if it speaks the language), else the language's."""
    voice = voices.get(settings.voice_id) if settings.voice_id else None
    if voice is None and settings.avatar_voice_id:
        own = voices.get(settings.avatar_voice_id)
        if own is not None and (not settings.language or _primary(own.language) == _primary(settings.language)):
            voice = own
    return voice or voices.default_voice(settings.language)


def _primary(language: str) -> str:
    return language.replace("_", "-").split("-", 1)[0].lower()


@dataclass(frozen=True)
class Reply:
    """A reply the session owes: an answer to the user's words, or a line to say (the prologue)."""

    kind: Literal["answer", "say"]
    text: str
    mid: str
    """The id of the bot's chat message: the client's chat mid when it answers one."""
    owed_at: float = field(default_factory=time.perf_counter)


class Conversation:
    """Queued replies played one Turn at a time; history keeps the user's words and what they heard."""

    def __init__(
        self,
        *,
        speaker: Speaker,
        clock: Clock,
        voices: VoiceRegistry,
        settings: Callable[[], SessionSettings],
        send_chat: Callable[[list[str]], None],
        send_event: Callable[[Message], None],
        dialogue: Dialogue | None = None,
        camera: Callable[[], av.VideoFrame | None] = lambda: None,
        timing: Timing = untimed,
    ) -> None:
        self._speaker = speaker
        self._clock = clock
        self._voices = voices
        self._settings = settings
        self._send_chat = send_chat
        self._send_event = send_event
        self.dialogue = dialogue
        self._camera = camera
        self._timing = timing
        self._replies: asyncio.Queue[Reply] = asyncio.Queue(MAX_QUEUED_REPLIES)
        self._turn: Turn | None = None
        self.history: list[dict[str, Any]] = []
        """What was said, in order: the client's text and what the user actually heard of each reply."""
        self.interrupts: list[dict[str, float]] = []
        """For each interrupt of a reply: session time it was handled and where the sound stopped."""

    @property
    def speaking(self) -> bool:
        """Whether a reply is being played (or prepared) now."""
        return self._turn is not None and self._turn.stopped_at is None

    def answer(self, text: str, mid: str | None = None) -> None:
        """Owe an answer to the user's words (`mid`: the client's chat id, reused by the reply)."""
        self._owe(Reply("answer", text, mid or new_id()))

    def say(self, text: str) -> None:
        """Owe a line said on the avatar's own account (the knowledge base's prologue)."""
        self._owe(Reply("say", text, new_id()))

    def _owe(self, reply: Reply) -> None:
        try:
            self._replies.put_nowait(reply)
        except asyncio.QueueFull:
            raise RateLimited(
                f"the avatar already owes {MAX_QUEUED_REPLIES} replies; wait for them or interrupt"
            ) from None

    def cut(self) -> float | None:
        """Silence the current reply now, on receipt of an interrupt; where its sound stopped (None when silent)."""
        turn = self._turn
        if turn is None or turn.stopped_at is not None:
            return None
        at = self._clock.now()
        stopped = turn.cut()
        # Microseconds: both are session seconds, and float noise must not reorder them in the record.
        self.interrupts.append({"at": round(at, 6), "silent_from": round(stopped, 6)})
        return stopped

    async def interrupt(self) -> float | None:
        """Drop the owed replies and end the current one; where its sound stopped (None when it was silent)."""
        while not self._replies.empty():
            self._replies.get_nowait()
        turn = self._turn
        if turn is None:
            return None
        stopped = self.cut()
        await turn.interrupt()
        return stopped

    async def run(self) -> None:
        """Play owed replies in order until cancelled (the session owns this task)."""
        while True:
            reply = await self._replies.get()
            if reply.kind == "answer":
                self.history.append({"from": "user", "text": reply.text})
            turn = self._turn_for(reply)
            self._turn = turn
            try:
                turn.start()
                await turn.wait()
            finally:
                self._turn = None
                heard = turn.heard()
                self.history.append({"from": "bot", "text": heard, "interrupted": turn.stopped_at is not None})
                if self.dialogue is not None:
                    self.dialogue.remember(reply.text if reply.kind == "answer" else None, heard)

    def transcript(self) -> dict[str, Any]:
        """The record as plain values: messages, interrupts and the passages behind the latest answer."""
        return {
            "messages": list(self.history),
            "interrupts": list(self.interrupts),
            "passages": list(self.dialogue.last_passages) if self.dialogue else [],
        }

    def _turn_for(self, reply: Reply) -> Turn:
        """A reply: the text itself (retelling, the prologue) or an LLM answer (dialogue mode)."""
        settings = self._settings()
        voice = voice_for(self._voices, settings)
        if reply.kind == "answer" and settings.mode == 2 and self.dialogue is not None:
            language = settings.language or voice.language
            text = self.dialogue.answer(reply.text, language=language, image=self._camera_jpeg())
        else:
            text = retell(reply.text)
        return Turn(
            text,
            tts=self._voices.tts_for(voice),
            voice=voice,
            speaker=self._speaker,
            clock=self._clock,
            chat=ChatStream(reply.mid, "bot", settings.profile),
            send_chat=self._send_chat,
            send_event=self._send_event,
            speed=settings.speed,
            pron_map=settings.pron_map,
            timing=self._timing,
            owed_at=reply.owed_at,
        )

    def _camera_jpeg(self) -> bytes | None:
        """The latest camera frame as JPEG, only when the LLM takes images (otherwise it costs nothing)."""
        frame = self._camera()
        if frame is None or self.dialogue is None or not self.dialogue.brain.llm.supports_images:
            return None
        ok, data = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return data.tobytes() if ok else None
