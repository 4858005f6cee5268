"""Speech playback on the session clock: queued audio, silence in between, and exactly what was played."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from liveavatar.media import AUDIO_RATE, AUDIO_SAMPLES
from liveavatar.speech.resample import resample

FADE_SAMPLES = AUDIO_RATE // 400
"""2.5 ms: how long a cut-off sound fades out (a hard cut clicks)."""


def to_playback_rate(samples: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    """Mono int16 audio at `rate` resampled to 48 kHz (polyphase: clean and ~2 ms per second of speech).

    Blocking: the TTS backends do it in their synthesis thread (`synthesize(..., rate=AUDIO_RATE)`).
    """
    return resample(samples, rate, AUDIO_RATE)


@dataclass
class _Segment:
    start: int
    samples: npt.NDArray[np.int16]

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


class Playback:
    """The outbound audio timeline, in 48 kHz samples since the session clock started.

    The audio track `read()`s one 20 ms frame at a time; speech is `schedule()`d after what is queued.
    `cursor` is the next sample to be handed to the track: everything before it has been played.
    """

    def __init__(self, lead: float = 0.0) -> None:
        # No lead by default: `cursor` is never in the past (the track has not read that frame yet), so a
        # reply on an idle timeline starts with the very next 20 ms frame; any lead is first-sound latency.
        self.cursor = 0
        self._lead = int(lead * AUDIO_RATE)
        self._queue: deque[_Segment] = deque()
        self._silence = np.zeros(AUDIO_SAMPLES, dtype=np.int16)

    @property
    def tail(self) -> int:
        """The sample after the last one queued (== cursor when idle)."""
        return max(self.cursor, self._queue[-1].end) if self._queue else self.cursor

    @property
    def busy(self) -> bool:
        """Whether anything is still to be played."""
        return bool(self._queue)

    def schedule(self, samples: npt.NDArray[np.int16]) -> int:
        """Queue 48 kHz samples right after what is queued (or `lead` from now when idle); returns their start."""
        start = self.tail if self._queue else self.cursor + self._lead
        self._queue.append(_Segment(start, samples))
        return start

    def read(self, start: int | None = None) -> npt.NDArray[np.int16]:
        """The next 20 ms frame: queued speech where there is some, silence elsewhere.

        `start` is the track's sample position: past the cursor when the track skipped frames to catch up
        with the clock, and what lies in between is then dropped unplayed.
        """
        begin = self.cursor if start is None else max(self.cursor, start)
        end = begin + AUDIO_SAMPLES
        self.cursor = end
        while self._queue and self._queue[0].end <= begin:
            self._queue.popleft()
        if not self._queue or self._queue[0].start >= end:
            return self._silence
        frame = np.zeros(AUDIO_SAMPLES, dtype=np.int16)
        for segment in self._queue:
            if segment.start >= end:
                break
            lo, hi = max(begin, segment.start), min(end, segment.end)
            frame[lo - begin : hi - begin] = segment.samples[lo - segment.start : hi - segment.start]
        while self._queue and self._queue[0].end <= end:
            self._queue.popleft()
        return frame

    def clear(self) -> int:
        """Stop: drop everything queued except a 2.5 ms fade-out; returns the sample where sound stops."""
        stop = self.cursor
        tail: npt.NDArray[np.int16] | None = None
        for segment in self._queue:
            if segment.start <= stop < segment.end:
                tail = segment.samples[stop - segment.start : stop - segment.start + FADE_SAMPLES]
        self._queue.clear()
        if tail is not None and len(tail):
            ramp = np.linspace(1.0, 0.0, len(tail), dtype=np.float32)
            self._queue.append(_Segment(stop, (tail * ramp).astype(np.int16)))
        return stop
