"""Offline rendering: the audio and video a live session would send, written to a video file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import av
import cv2
import numpy as np

from liveavatar.media import AUDIO_RATE, AUDIO_SAMPLES, VIDEO_FPS
from liveavatar.render.background import Background
from liveavatar.render.loop import renderer_for
from liveavatar.render.motion import Motion
from liveavatar.render.pack import AvatarPack
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.playback import to_playback_rate
from liveavatar.speech.base import TTS, Voice
from liveavatar.transport.tracks import audio_frame

TAIL = 0.6
"""Seconds of idle animation after the speech, so the clip does not end mid-word."""


async def render_clip(
    pack: AvatarPack,
    text: str,
    out: Path,
    *,
    tts: TTS,
    voice: Voice,
    speed: float = 1.0,
    pron_map: Mapping[str, str] | None = None,
    background: Background | None = None,
    progress: Callable[[float], None] | None = None,
) -> float:
    """Speak `text` with `voice` as avatar `pack` into an MP4 (H.264 + AAC); returns its duration in seconds."""
    source = AvatarSource(renderer_for(pack, background), Motion(seed=0))
    end = 0.0
    async for chunk in tts.synthesize(text, voice, speed=speed, pron_map=pron_map, rate=AUDIO_RATE):
        end = source.speaker.speak(chunk, to_playback_rate(chunk.audio, chunk.sample_rate))[1]
    frames = int(np.ceil((end + TAIL) * VIDEO_FPS))
    width, height = source.video_size
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        per_frame = AUDIO_RATE // VIDEO_FPS // AUDIO_SAMPLES  # 2 audio frames per video frame
        for index in range(frames):
            t = index / VIDEO_FPS
            yuv = np.asarray(cv2.cvtColor(source.video_frame(t), cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
            picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            picture.pts = index
            container.mux(video.encode(picture))
            for part in range(per_frame):
                sound = audio_frame(source.audio_frame(t), index * per_frame + part)
                container.mux(audio.encode(sound))
            if progress is not None and index % VIDEO_FPS == 0:
                progress(index / frames)
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return frames / VIDEO_FPS
