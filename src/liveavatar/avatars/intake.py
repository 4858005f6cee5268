"""A custom avatar's source file -> the portrait its pack is built from (a photo, or a video's best frame).

A video's best frame gives the mouth model; the builder then cuts the loop from the clip around it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import cv2
import numpy as np

from liveavatar.errors import ParamError
from liveavatar.render.arrays import U8
from liveavatar.render.detection import face_meshes, head_angles, mouth_opening
from liveavatar.render.landmarks import face_height

log = logging.getLogger(__name__)

MAX_SOURCE_BYTES: Final = 100 * 1024 * 1024
"""Largest photo or video accepted (URL or upload)."""
MAX_IMAGE_BYTES: Final = 25 * 1024 * 1024
MAX_VIDEO_SECONDS: Final = 120.0
"""Longest video accepted (the loop is cut from the part around its best frame)."""
FALLBACK_FRAMES: Final = 3
"""Next-best video frames kept in case the builder refuses the best one."""
VIDEO_SAMPLES: Final = 24
"""Frames of a video looked at when choosing the portrait, evenly spread over the clip."""
DETECT_SIDE: Final = 1024
"""Sampled frames are scaled down to this side for the face search (the chosen one is used at full size)."""
UNREADABLE: Final = "the file is not an image or a video that can be read (use JPEG, PNG, WebP, MP4, WebM or MOV)"

Kind = Literal["image", "video"]
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Portrait:
    """The image a pack is built from, and where it came from."""

    image: U8
    kind: Kind
    note: str = ""
    """For a video: which frame was chosen, and why."""
    seconds: float = 0.0
    """For a video: where the chosen frame is in the clip."""
    fallbacks: tuple[tuple[str, U8, float], ...] = ()
    """For a video: the next best frames (note, image, seconds), tried in order when the best one cannot be built."""


def sniff(data: bytes) -> Kind | None:
    """Image or video, from the file's first bytes; None when it is neither."""
    head = data[:16]
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if webp or head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")):
        return "image"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"
    return None


def read_portrait(data: bytes, *, max_seconds: float = MAX_VIDEO_SECONDS, progress: Progress | None = None) -> Portrait:
    """Decode a photo, or pick a video's best frontal frame; ParamError with a plain reason otherwise."""
    if len(data) > MAX_SOURCE_BYTES:
        raise ParamError(f"the file is too large ({len(data) / 2**20:.0f} MB; at most {MAX_SOURCE_BYTES // 2**20} MB)")
    kind = sniff(data)
    if kind == "video":
        return best_frame(data, max_seconds=max_seconds, progress=progress)
    if len(data) > MAX_IMAGE_BYTES:
        raise ParamError(f"the photo is too large ({len(data) / 2**20:.0f} MB; at most {MAX_IMAGE_BYTES // 2**20} MB)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ParamError(UNREADABLE)
    return Portrait(np.ascontiguousarray(image), "image")


def frame_score(lm: np.ndarray[Any, Any], others: int) -> float:
    """How good a frame is as the avatar's portrait: frontal, mouth closed, face large, no second face."""
    yaw, pitch, roll = head_angles(lm)
    frontal = (abs(yaw) / 20) ** 2 + (abs(pitch) / 25) ** 2 + (abs(roll) / 20) ** 2
    mouth = max(0.0, mouth_opening(lm) - 0.05) * 10
    size = min(face_height(lm), 400.0) / 400.0
    return size - frontal - mouth - 5.0 * others


def best_frame(data: bytes, *, max_seconds: float = MAX_VIDEO_SECONDS, progress: Progress | None = None) -> Portrait:
    """The video frame with the best frontal face (face detection on up to VIDEO_SAMPLES frames)."""
    frames = sample_frames(data, max_seconds=max_seconds)
    scored: list[tuple[float, int]] = []
    for index, (_, frame) in enumerate(frames):
        if progress is not None:
            progress("looking for the best frame of the video", 0.02 + 0.08 * index / len(frames))
        scale = min(1.0, DETECT_SIDE / max(frame.shape[:2]))
        small = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = face_meshes(np.ascontiguousarray(small))
        if not faces:
            continue
        faces.sort(key=lambda f: -float(np.ptp(f[:, 1])))
        main = faces[0] / scale
        others = sum(1 for f in faces[1:] if np.ptp(f[:, 1]) > 0.6 * np.ptp(faces[0][:, 1]))
        scored.append((frame_score(main, others), index))
    if not scored:
        raise ParamError("no face was found in the video; use a clip of one person facing the camera")
    ranked = [frames[index] for _, index in sorted(scored, reverse=True)[: 1 + FALLBACK_FRAMES]]
    notes = [f"the frame at {seconds:.1f} s, chosen from {len(frames)} looked at" for seconds, _ in ranked]
    log.info("avatar from a video: %s", notes[0])
    fallbacks = tuple((note, image, seconds) for note, (seconds, image) in zip(notes[1:], ranked[1:], strict=True))
    return Portrait(ranked[0][1], "video", notes[0], ranked[0][0], fallbacks)


def sample_frames(data: bytes, *, max_seconds: float = MAX_VIDEO_SECONDS) -> list[tuple[float, U8]]:
    """Up to VIDEO_SAMPLES decoded frames (time in seconds, BGR image), evenly spread over the video."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ParamError(UNREADABLE) from exc
    with container:
        if not container.streams.video:
            raise ParamError("the video has no picture track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = float(container.duration) / 1e6 if container.duration else 0.0
        if not duration and stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if duration > max_seconds:
            raise ParamError(f"the video is too long ({duration:.0f} s; at most {max_seconds:.0f} s)")
        span = duration or max_seconds
        targets = [span * (i + 0.5) / VIDEO_SAMPLES for i in range(VIDEO_SAMPLES)]
        frames: list[tuple[float, U8]] = []
        last: tuple[float, Any] | None = None
        try:
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                if t > max_seconds + 1:
                    raise ParamError(f"the video is too long (more than {max_seconds:.0f} s)")
                last = (t, frame)
                if targets and t >= targets[0]:
                    frames.append((t, np.ascontiguousarray(frame.to_ndarray(format="bgr24"))))
                    while targets and targets[0] <= t:
                        targets.pop(0)
        except av.FFmpegError as exc:
            if not frames:
                raise ParamError(UNREADABLE) from exc
        if not frames and last is not None:  # a clip shorter than its first sampling time
            frames.append((last[0], np.ascontiguousarray(last[1].to_ndarray(format="bgr24"))))
    if not frames:
        raise ParamError("the video has no frames that can be decoded")
    return frames
