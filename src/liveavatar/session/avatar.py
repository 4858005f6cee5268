"""The talking avatar as a media source: speech playback, lip-sync, idle motion and the renderer on one clock."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from liveavatar.render.audio_mouth import AudioMouth
from liveavatar.render.background import Background
from liveavatar.render.face import FaceState
from liveavatar.render.motion import Motion
from liveavatar.render.phoneme_mouth import LipSyncParams, MouthTimeline
from liveavatar.render.renderer import Renderer
from liveavatar.session.playback import Playback
from liveavatar.speech.base import SpeechChunk
from liveavatar.transport.tracks import AUDIO_RATE

HISTORY = 2.0
"""Seconds of past mouth data kept (bounded memory over a long session)."""


class AvatarSource:
    """What a session shows and plays: the outbound tracks pull frames; replies `speak()` into it."""

    def __init__(self, renderer: Renderer, motion: Motion, lead: float = 0.03) -> None:
        self.renderer = renderer
        self.motion = motion
        self.playback = Playback()
        self.timeline = MouthTimeline(LipSyncParams(lead=lead))
        self.audio_mouth = AudioMouth()
        self._last_cleanup = 0.0

    @property
    def video_size(self) -> tuple[int, int]:
        """Width and height of the rendered frames."""
        return self.renderer.size

    def video_frame(self, t: float) -> npt.NDArray[np.uint8]:
        """The frame at session time `t`: mouth from the speech being played, idle motion on top."""
        mouth = np.maximum(self.timeline.weights_at(t), self.audio_mouth.weights_at(t))
        state = self.motion.apply(FaceState(mouth=mouth), t)
        if t - self._last_cleanup > HISTORY:
            self.timeline.clear_before(t - HISTORY)
            self.audio_mouth.clear_before(t - HISTORY)
            self._last_cleanup = t
        return self.renderer.render(state)

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The next 20 ms of speech (or silence)."""
        return self.playback.read()

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

    def set_background(self, background: Background | None) -> None:
        """Show another background from the next frame on."""
        self.renderer.set_background(background)
