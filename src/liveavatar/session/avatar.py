"""The talking avatar as a media source: speech, idle motion and the renderer on one clock."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from liveavatar.render.background import Background
from liveavatar.render.face import FaceState
from liveavatar.render.loop import FrameRenderer
from liveavatar.render.motion import Motion
from liveavatar.session.speaker import Speaker


class AvatarSource:
    """What a session shows and plays: the outbound tracks pull frames; replies speak into `speaker`."""

    def __init__(self, renderer: FrameRenderer, motion: Motion, lead: float = 0.03) -> None:
        self.renderer = renderer
        self.motion = motion
        self.speaker = Speaker(lead)
        self._video: Background | None = None
        self._video_start: float | None = None
        self._video_index = -1

    @property
    def video_size(self) -> tuple[int, int]:
        """Width and height of the rendered frames."""
        return self.renderer.size

    def video_frame(self, t: float) -> npt.NDArray[np.uint8]:
        """The frame at session time `t`: mouth from the speech being played, idle motion on top."""
        if self._video is not None:
            self._advance_video(t)
        state = self.motion.apply(FaceState(mouth=self.speaker.mouth_at(t)), t)
        return self.renderer.render(state)

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The next 20 ms of speech (or silence)."""
        return self.speaker.audio_frame()

    def set_background(self, background: Background | None) -> None:
        """Show another background from the next frame on; a video one loops from its start."""
        if background is not None and background.is_video:
            self._video, self._video_start, self._video_index = background, None, -1
            return
        self._video = None
        self.renderer.set_background(background)

    def _advance_video(self, t: float) -> None:
        """Put the video frame for session time `t` behind the avatar when it changes (VIDEO_FPS, not 25 fps)."""
        assert self._video is not None
        if self._video_start is None:
            self._video_start = t
        index = self._video.frame_index(t - self._video_start)
        if index != self._video_index:
            self._video_index = index
            self.renderer.set_background(self._video.still(index))
