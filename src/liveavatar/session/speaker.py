"""Speech on the session clock: the audio to play and the mouth motion that goes with it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from liveavatar.media import AUDIO_RATE
from liveavatar.render.audio_mouth import AudioMouth
from liveavatar.render.phoneme_mouth import LipSyncParams, MouthTimeline
from liveavatar.session.playback import Playback
from liveavatar.speech.base import SpeechChunk

HISTORY = 2.0
"""Seconds of past mouth data kept (bounded memory over a long session)."""


class Speaker:
    """Replies `speak()` into it; the audio track reads 20 ms frames and the renderer the mouth weights."""

    def __init__(self, lead: float = 0.03) -> None:
        self.playback = Playback()
        self.timeline = MouthTimeline(LipSyncParams(lead=lead))
        self.audio_mouth = AudioMouth()
        self._last_cleanup = 0.0

    def speak(self, chunk: SpeechChunk, samples: npt.NDArray[np.int16]) -> tuple[float, float]:
        """Queue a chunk's 48 kHz audio and its mouth motion; returns its (start, end) on the session clock."""
        start = self.playback.schedule(samples) / AUDIO_RATE
        end = start + len(samples) / AUDIO_RATE
        if chunk.phonemes:
            self.timeline.add(chunk.phonemes, start, end - start)
        else:
            self.audio_mouth.feed(samples, AUDIO_RATE, start)
        return start, end

    def queued_until(self) -> float:
        """Session time at which the speech queued so far ends (now, when nothing is queued)."""
        return self.playback.tail / AUDIO_RATE

    def silence(self) -> float:
        """Cut the speech now (mouth eases to rest); returns the session time where the sound stopped."""
        stop = self.playback.clear() / AUDIO_RATE
        self.timeline.interrupt(stop)
        self.audio_mouth.interrupt(stop)
        return stop

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The 20 ms of speech (or silence) the audio track plays at session time `t`."""
        return self.playback.read(round(t * AUDIO_RATE))

    def mouth_at(self, t: float) -> npt.NDArray[np.float32]:
        """The mouth's viseme weights at session time `t` (phoneme-driven or audio-driven, whichever speaks)."""
        mouth = np.maximum(self.timeline.weights_at(t), self.audio_mouth.weights_at(t))
        if t - self._last_cleanup > HISTORY:
            self.timeline.clear_before(t - HISTORY)
            self.audio_mouth.clear_before(t - HISTORY)
            self._last_cleanup = t
        return mouth
