"""The talking avatar as a media source: speech, idle motion and the renderer on one clock."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import numpy.typing as npt

from liveavatar.render.background import Background
from liveavatar.render.face import FaceState
from liveavatar.render.loop import FrameRenderer
from liveavatar.render.motion import Motion
from liveavatar.session.speaker import Speaker
from liveavatar.transport.tracks import Drawing

ANGLE_STEP = 0.16
"""Degrees of yaw, pitch or roll the head may drift before a new frame is drawn (~0.4 px at the crown)."""
SHIFT_STEP = 0.3
"""Pixels of head offset (dx, dy) the head may drift before a new frame is drawn."""
WEIGHT_STEP = 1e-3
"""Change of a mouth, blink, brow or smile weight (0..1) that is drawn at once."""


class AvatarSource:
    """What a session shows and plays: the outbound tracks pull frames; replies speak into `speaker`."""

    # Idle motion moves the head by a few hundredths of a pixel per frame: the head is drawn where it was
    # until the pose has moved a step from the one last drawn (a 0.3 px step ~10 times a second is not
    # seen). A frame in which nothing else changed is the last one again (two idle frames in three: neither
    # rendered nor encoded); the mouth, eyes, brows and backdrop are drawn at once, so speech keeps the
    # full frame rate, and a mouth over a held head is all the renderer draws again (render/renderer.py).

    def __init__(self, renderer: FrameRenderer, motion: Motion, lead: float = 0.03) -> None:
        self.renderer = renderer
        self.motion = motion
        self.speaker = Speaker(lead)
        self._video: Background | None = None
        self._video_start: float | None = None
        self._video_index = -1
        self._backgrounds: list[Background | None] = []
        """Backgrounds set since the last picture: the next drawing puts the last one behind the avatar."""
        self._drawn: FaceState | None = None
        self._frame: npt.NDArray[np.uint8] | None = None

    @property
    def video_size(self) -> tuple[int, int]:
        """Width and height of the rendered frames."""
        return self.renderer.size

    def video_picture(self, t: float, can_repeat: bool = True) -> Drawing | None:
        """The picture at session time `t`: mouth from the speech being played, idle motion on top.

        None when it is the last frame again (if `can_repeat`); else the drawing, which may run on another
        thread: until it has returned, nothing here touches the renderer (a new background waits for it).
        """
        if self._video is not None:
            self._advance_video(t)
        state = self.motion.apply(FaceState(mouth=self.speaker.mouth_at(t)), t)
        drawn = self._drawn
        if self.renderer.still_when_unchanged and drawn is not None and _near(state, drawn):
            state = replace(state, yaw=drawn.yaw, pitch=drawn.pitch, roll=drawn.roll, dx=drawn.dx, dy=drawn.dy)
            if can_repeat and not self._backgrounds and _same(state, drawn):
                return None
        backgrounds, self._backgrounds = self._backgrounds, []
        self._drawn = None  # until the drawing has returned
        return partial(self._draw, state, backgrounds[-1:])

    def video_frame(self, t: float) -> npt.NDArray[np.uint8]:
        """The BGR frame at session time `t`, drawn here if it is a new one."""
        draw = self.video_picture(t)
        if draw is not None:
            return draw()
        assert self._frame is not None
        return self._frame

    def _draw(self, state: FaceState, background: list[Background | None]) -> npt.NDArray[np.uint8]:
        for backdrop in background:
            self.renderer.set_background(backdrop)
        self._frame = self.renderer.render(state)
        self._drawn = state
        return self._frame

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The 20 ms of speech (or silence) at session time `t`."""
        return self.speaker.audio_frame(t)

    def set_background(self, background: Background | None) -> None:
        """Show another background from the next frame on; a video one loops from its start."""
        if background is not None and background.is_video:
            self._video, self._video_start, self._video_index = background, None, -1
            return
        self._video = None
        self._backgrounds.append(background)

    def _advance_video(self, t: float) -> None:
        """Put the video frame for session time `t` behind the avatar when it changes (VIDEO_FPS, not 25 fps)."""
        assert self._video is not None
        if self._video_start is None:
            self._video_start = t
        index = self._video.frame_index(t - self._video_start)
        if index != self._video_index:
            self._video_index = index
            self._backgrounds.append(self._video.still(index))


def _near(a: FaceState, b: FaceState) -> bool:
    """Whether two head poses look the same (see ANGLE_STEP and SHIFT_STEP)."""
    return (
        abs(a.yaw - b.yaw) < ANGLE_STEP
        and abs(a.pitch - b.pitch) < ANGLE_STEP
        and abs(a.roll - b.roll) < ANGLE_STEP
        and abs(a.dx - b.dx) < SHIFT_STEP
        and abs(a.dy - b.dy) < SHIFT_STEP
    )


def _same(a: FaceState, b: FaceState) -> bool:
    """Whether two states' face and mouth look the same (see WEIGHT_STEP)."""
    return (
        abs(a.blink - b.blink) < WEIGHT_STEP
        and abs(a.brows - b.brows) < WEIGHT_STEP
        and abs(a.smile - b.smile) < WEIGHT_STEP
        and float(np.max(np.abs(np.asarray(a.mouth) - np.asarray(b.mouth)))) < WEIGHT_STEP
    )
