"""A session's ears: microphone frames -> 16 kHz -> turn detection -> transcripts, barge-in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import numpy as np

from liveavatar.media import Clock, Timing, untimed
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.partials import PartialTranscriber, PassGate
from liveavatar.speech.resample import LISTEN_RATE, FloatAudio, Resampler
from liveavatar.speech.stt import STT, Transcript, normalize_stt_language
from liveavatar.speech.turns import Partial, SpeechStarted, SpeechStopped, TurnDetector
from liveavatar.speech.vad import VAD

log = logging.getLogger(__name__)
QUEUE_FRAMES = 250
"""Inbound 20 ms frames buffered while the listener is busy (5 s); older ones are dropped."""


@dataclass(frozen=True)
class Ears:
    """The models every session's listener shares (loaded once per process)."""

    vad: VAD
    stt: STT
    passes: PassGate = field(default_factory=PassGate)
    """Partial STT passes in flight in this process (extra passes wait for a free STT)."""

    def load(self) -> None:
        """Load the VAD and the default STT model now (blocking), so no utterance waits for them."""
        self.vad.load()
        self.stt.load()


class Listener:
    """Turns one session's microphone into user turns; calls back on speech onset and on each transcript."""

    def __init__(
        self,
        ears: Ears,
        clock: Clock,
        settings: Callable[[], SessionSettings],
        *,
        on_speech: Callable[[float], Awaitable[None]],
        on_utterance: Callable[[str], Awaitable[None]],
        timing: Timing = untimed,
    ) -> None:
        self._ears = ears
        self._clock = clock
        self._settings = settings
        self._on_speech = on_speech
        self._on_utterance = on_utterance
        self._timing = timing
        self.frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self._detector = TurnDetector(ears.vad, settings().turn, transcribe=self._transcribe)
        self.partials = PartialTranscriber(self._transcribe_after, ears.passes)
        self._resampler = Resampler(LISTEN_RATE)
        self._origin: float | None = None
        self.heard_utterances = 0

    def push(self, frame: av.AudioFrame) -> None:
        """Take a microphone frame (from the peer's reader); drops the oldest when the listener lags."""
        if self.frames.full():
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    def update(self, settings: SessionSettings) -> None:
        """New turn-detection settings apply from the next utterance."""
        self._detector.update(settings.turn)

    async def _transcribe(self, audio: FloatAudio) -> Transcript:
        return await self._transcribe_after(audio, "")

    async def _transcribe_after(self, audio: FloatAudio, prefix: str) -> Transcript:
        language = normalize_stt_language(self._settings().stt_language)
        started = time.perf_counter()
        transcript = await self._ears.stt.transcribe(audio, language, prefix=prefix)
        self._timing("stt_pass", time.perf_counter() - started)
        return transcript

    async def run(self) -> None:
        """Listen until cancelled (the session owns this task)."""
        try:
            while True:
                frame = await self.frames.get()
                if self._origin is None:
                    self._origin = self._clock.now() - frame.samples / frame.sample_rate
                t = self._origin + self._resampler.emitted / LISTEN_RATE
                samples = np.asarray(frame.to_ndarray(), dtype=np.int16)  # aiortc decodes to s16
                pcm = self._resampler.process(samples, frame.sample_rate, len(frame.layout.channels))
                for event in await self._detector.feed(pcm, t):
                    await self._handle(event)
                # semantic_vad transcribes its pauses itself (to judge them); server_vad's are transcribed here.
                if self._detector.settings.type == "server_vad":
                    self.partials.follow(self._detector)
        finally:
            self.partials.cancel()

    async def _handle(self, event: SpeechStarted | SpeechStopped | Partial) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_speech(event.t)
        elif isinstance(event, SpeechStopped):
            ended = time.perf_counter()
            self._timing("voice_end_to_turn_end", event.t - event.speech_end)
            self._timing("turn_end_lag", max(0.0, self._clock.now() - event.t))
            transcript = event.transcript
            if transcript is None:
                transcript = await self.partials.final(event.audio, event.audio_start, event.speech_end)
            self._timing("speech_end_to_transcript", time.perf_counter() - ended)
            text = transcript.text.strip()
            if text:
                self.heard_utterances += 1
                await self._on_utterance(text)
