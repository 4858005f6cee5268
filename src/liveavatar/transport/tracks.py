"""Outbound media: 20 ms Opus packets and 25 fps video frames, paced on one session clock."""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import av
import cv2
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES, VIDEO_CLOCK, VIDEO_FPS, VIDEO_TICKS, Clock
from liveavatar.transport.opus import SpeechOpusEncoder

AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_MAX_LAG = 0.25
"""A track further behind the session clock than this (seconds) skips to the frame due now, dropping those in
between: late audio frames go out back to back (the receiver's jitter buffer absorbs a burst) up to here."""
VIDEO_MAX_LAG = 2 / VIDEO_FPS
"""Video catches up by skipping sooner: a stale frame is worth less than the CPU it costs to draw."""
LAG_LOG_EVERY = 10.0

log = logging.getLogger(__name__)


def audio_frame(samples: npt.NDArray[np.int16], index: int) -> av.AudioFrame:
    """The `index`-th 20 ms frame of a 48 kHz mono s16 stream."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = index * AUDIO_SAMPLES
    frame.time_base = AUDIO_TIME_BASE
    return frame


class AudioSource(Protocol):
    """What a session plays; times are seconds on the session's media clock."""

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The AUDIO_SAMPLES mono samples (48 kHz) that start playing at time `t`.

        `t` steps by AUDIO_PTIME, or jumps further when the track skipped frames (what lies between is dropped).
        """
        ...


Drawing = Callable[[], npt.NDArray[np.uint8]]
"""Draws one BGR video frame, off the event loop (see AvatarVideoTrack)."""


class MediaSource(AudioSource, Protocol):
    """What a session shows and plays; times are seconds on the session's media clock."""

    @property
    def video_size(self) -> tuple[int, int]:
        """Width and height of the video frames (even numbers)."""
        ...

    def video_picture(self, t: float, can_repeat: bool) -> Drawing | None:
        """What to show at time `t`, decided on the event loop: the function that draws the frame, or None to
        show the last one again (only if `can_repeat`: a new track, as on a rejoin, has none yet).

        The function runs on a worker thread (the encoder's, see AvatarVideoTrack) and has returned before the
        track asks for the next picture, so the source's drawing state belongs to one thread at a time.
        """
        ...


class Pacer:
    """A track's frame index on the session clock, never more than `max_lag` behind it.

    A process short of CPU hands frames out late. Without a bound the media time would drift ever further
    behind the clock that replies, interrupts and actions are scheduled on, with their speech and mouth data
    piling up until played; so a track that falls that far behind jumps to the frame due now.
    """

    def __init__(self, clock: Clock, period: float, max_lag: float, kind: str) -> None:
        self._clock = clock
        self._period = period
        self._max_lag = max_lag
        self._kind = kind
        self.index = 0
        """The next frame's."""
        self.skipped = 0
        """Frames skipped so far (never sent)."""
        self._logged_at = -math.inf

    async def next(self) -> tuple[int, float]:
        """Wait until the next frame is due; its index and session time (after a skip when far behind)."""
        t = self.index * self._period
        behind = self._clock.now() - t
        if behind > self._max_lag:
            skip = int(behind / self._period)
            if self.index:  # else it is the track's first frame, on a clock already running (a rejoin)
                self.skipped += skip
                self._log(behind)
            self.index += skip
            t = self.index * self._period
        await self._clock.wait_until(t)
        index, self.index = self.index, self.index + 1
        return index, t

    def _log(self, behind: float) -> None:
        now = self._clock.now()
        if now - self._logged_at >= LAG_LOG_EVERY:
            self._logged_at = now
            log.warning(
                "%s fell %.0f ms behind the session clock (CPU short?): skipped to now, %d frames dropped so far",
                self._kind,
                behind * 1000,
                self.skipped,
            )


class AvatarAudioTrack(MediaStreamTrack):
    """Server -> client audio: one 20 ms Opus packet (48 kHz mono) per recv(), paced in real time.

    It encodes itself, on the event loop (~80 us a frame of speech): aiortc sends packets as they come
    (transport/opus.py), with RTP timestamp origin + pts, pts = index * AUDIO_SAMPLES as for frames.
    """

    kind = "audio"

    def __init__(self, source: AudioSource, clock: Clock) -> None:
        super().__init__()
        self._source = source
        self.pacer = Pacer(clock, AUDIO_PTIME, AUDIO_MAX_LAG, "audio")
        self._encoder = SpeechOpusEncoder()

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        index, t = await self.pacer.next()
        samples = self._source.audio_frame(t)
        silent = not samples.any()
        packet = self._encoder.repeat_silence(index * AUDIO_SAMPLES) if silent else None
        return packet if packet is not None else self._encoder.encode(audio_frame(samples, index), silent=silent)


class AvatarVideoTrack(MediaStreamTrack):
    """Server -> client video: 25 fps, 90 kHz timestamps (pts = n * 3600).

    A new frame is handed out undrawn, its drawing in `opaque`: the encoder draws it (`draw_pending`) in the
    worker thread it encodes in (aiortc runs encoders on the loop's default executor), or, when the sender
    does not encode with ours (`encoder_draws` False), the track draws it there first. 1-3 ms of drawing on the
    event loop would hold back the audio of every session the loop serves.
    """

    kind = "video"

    def __init__(self, source: MediaSource, clock: Clock) -> None:
        super().__init__()
        self._source = source
        self.pacer = Pacer(clock, 1 / VIDEO_FPS, VIDEO_MAX_LAG, "video")
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._last: av.VideoFrame | None = None
        self.encoder_draws = False
        """Whether the sender's encoder draws the frames it is given (transport/vp8.py's does)."""

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index, t = await self.pacer.next()
        frame = self._last
        draw = self._source.video_picture(t, can_repeat=frame is not None)
        if draw is not None:
            width, height = self._source.video_size
            frame = self._last = av.VideoFrame(width, height, "yuv420p")
            frame.opaque = draw
            if not self.encoder_draws:
                await asyncio.get_running_loop().run_in_executor(None, draw_pending, frame)
        else:
            assert frame is not None
            # the sender encodes one frame before it asks for the next, so the same frame may go again;
            # a keyframe request marked it, and a repeat must not inherit that
            frame.pict_type = av.video.frame.PictureType.NONE
        frame.pts = index * VIDEO_TICKS
        frame.time_base = self._time_base
        return frame


def draw_pending(frame: av.VideoFrame) -> None:
    """Draw a frame the video track handed out undrawn (its drawing in `opaque`); other frames are left as they are."""
    draw = frame.opaque
    if not callable(draw):
        return
    frame.opaque = None
    # OpenCV's I420 conversion is several times faster than PyAV's reformat, and filling the frame's planes
    # ~5x faster than VideoFrame.from_ndarray
    yuv = cv2.cvtColor(draw(), cv2.COLOR_BGR2YUV_I420).reshape(-1)
    start = 0
    for plane in frame.planes:
        end = start + plane.width * plane.height
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        rows[:, : plane.width] = yuv[start:end].reshape(plane.height, plane.width)
        start = end
