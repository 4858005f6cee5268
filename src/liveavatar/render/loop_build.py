"""A video avatar's loop: a stretch of the clip around its best frame, cropped like the pack, face tracked per frame."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from liveavatar.errors import ParamError
from liveavatar.media import VIDEO_FPS
from liveavatar.render.arrays import F32, F64, U8
from liveavatar.render.detection import check_image, detect
from liveavatar.render.loop_geometry import fit_pose, mouth_patch
from liveavatar.render.pack import AvatarPack, Loop

Progress = Callable[[str, float], None]

LOOP_SECONDS = 6.0
"""Longest stretch of the clip kept as the loop (played forth and back: twice as long before it repeats)."""
JPEG_QUALITY = 90
"""Quality of the loop's frames in the pack."""
POSE_SMOOTHING = 1.0
"""Gaussian smoothing of the tracked head pose over time, in frames (takes out the landmarks' jitter)."""
MOST_LOST = 0.25
"""A clip whose face is lost in more than this share of the loop's frames is refused."""


def build_loop(data: bytes, pack: AvatarPack, source: U8, at: float, progress: Progress | None = None) -> Loop:
    """The loop of a video avatar whose pack was built from `source`, the clip's frame at `at` seconds."""

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            progress(stage, frac)

    img = check_image(source)
    scale = img.shape[1] / source.shape[1]
    seen = detect(img)
    seen[:, :2] /= scale
    crop = fit_pose(seen, pack.landmarks.astype(np.float64))  # source pixels -> the pack's frame
    report("cutting the loop from the video", 0.05)
    start, frames = decode_window(data, at, crop, pack.size, LOOP_SECONDS)
    report("following the face through the video", 0.25)
    tracked = track(frames, lambda frac: report("following the face through the video", 0.25 + 0.55 * frac))
    lost = sum(1 for lm in tracked if lm is None)
    if lost > MOST_LOST * len(frames):
        raise ParamError(
            f"the face is lost in {lost} of {len(frames)} frames of the video; "
            "use a clip of one person facing the camera"
        )
    poses = smooth_poses(
        [None if lm is None else fit_pose(pack.landmarks.astype(np.float64), lm) for lm in tracked], POSE_SMOOTHING
    )
    report("matching the light", 0.85)
    gains = light_gains(pack, frames, poses)
    report("storing the loop", 0.9)
    jpegs = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("a loop frame cannot be encoded")
        jpegs.append(buf.tobytes())
    report("done", 1.0)
    rest = min(max(round((at - start) * VIDEO_FPS), 0), len(frames) - 1)
    return Loop(
        frames=jpegs,
        poses=poses.astype(np.float32),
        gains=gains,
        fps=float(VIDEO_FPS),
        start=start,
        rest=rest,
        crop=crop,
    )


def decode_window(data: bytes, at: float, crop: F64, size: tuple[int, int], seconds: float) -> tuple[float, list[U8]]:
    """The clip's frames (resampled to VIDEO_FPS, cropped by `crop`) over up to `seconds` around `at`."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ParamError("the video cannot be read") from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = float(container.duration) / 1e6 if container.duration else 0.0
        start = max(0.0, at - seconds / 2)
        if duration:
            start = max(0.0, min(start, duration - seconds))
        end = start + seconds
        if start > 1.0 and stream.time_base:
            container.seek(int((start - 1.0) / stream.time_base), stream=stream, backward=True)
        times = [start + i / VIDEO_FPS for i in range(int(seconds * VIDEO_FPS))]
        out: list[U8] = []
        held: tuple[float, Any] | None = None
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            # each output time shows the last clip frame at or before it
            while times and held is not None and t > times[0] + 1e-6:
                out.append(_cropped(held[1], crop, size))
                times.pop(0)
            held = (t, frame)
            if not times or t > end:
                break
        while times and held is not None and times[0] < held[0] + 1.0 / VIDEO_FPS - 1e-6:
            out.append(_cropped(held[1], crop, size))
            times.pop(0)
    if len(out) < 2:
        raise ParamError("the video is too short to loop; use a clip of at least a few seconds")
    return start, out


def _cropped(frame: Any, crop: F64, size: tuple[int, int]) -> U8:
    bgr = frame.to_ndarray(format="bgr24")
    scale = float(np.sqrt(abs(np.linalg.det(crop[:, :2]))))
    if scale < 0.75:  # shrink first with area averaging: warping alone would alias
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        crop = np.hstack([crop[:, :2] / scale, crop[:, 2:]])
    return np.asarray(
        cv2.warpAffine(bgr, crop, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), np.uint8
    )


def track(frames: list[U8], progress: Callable[[float], None] | None = None) -> list[F64 | None]:
    """Landmarks (478 x 3, pixels) of the face in each frame, followed from frame to frame; None where lost."""
    import mediapipe as mp  # build time only: the renderer never imports it

    found: list[F64 | None] = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False,
        max_num_faces=1,
        refine_landmarks=True,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    ) as mesh:
        for index, frame in enumerate(frames):
            h, w = frame.shape[:2]
            res = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            faces = res.multi_face_landmarks or []
            found.append(
                np.array([(p.x * w, p.y * h, p.z * w) for p in faces[0].landmark], np.float64) if faces else None
            )
            if progress is not None and index % 10 == 0:
                progress(index / len(frames))
    return found


def smooth_poses(poses: list[F64 | None], sigma: float) -> F64:
    """Per-frame poses (N x 2 x 3) with lost frames filled from the nearest found one, smoothed over time."""
    have = [i for i, p in enumerate(poses) if p is not None]
    if not have:
        raise ParamError("no face was found in the video; use a clip of one person facing the camera")
    out = np.empty((len(poses), 2, 3), np.float64)
    for i in range(len(poses)):
        near = min(have, key=lambda j: abs(j - i))
        found = poses[near]
        assert found is not None
        out[i] = found
    if sigma <= 0 or len(poses) < 3:
        return out
    r = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(out[:1], r, 0), out, np.repeat(out[-1:], r, 0)])
    return np.asarray(
        np.tensordot(np.lib.stride_tricks.sliding_window_view(padded, len(kernel), 0), kernel, ([3], [0]))
    )


def light_gains(pack: AvatarPack, frames: list[U8], poses: F64) -> F32:
    """Per-frame BGR gains taking the rest frame's mouth region to each frame's brightness and colour."""
    (x0, y0, x1, y1), mask = mouth_patch(pack)
    rest = pack.image[y0:y1, x0:x1].astype(np.float64)
    # the soft edge on the person's skin: what surrounds the mouth, not the mouth the clip moves
    ring = mask * (mask < 0.95) * (pack.alpha[y0:y1, x0:x1] > 250)
    rest_mean = (rest * ring[..., None]).sum((0, 1)) / max(float(ring.sum()), 1e-6)
    gains = np.ones((len(frames), 3), np.float32)
    h, w = y1 - y0, x1 - x0
    for i, (frame, pose) in enumerate(zip(frames, poses, strict=True)):
        # the frame's pixels under the patch, pulled back into the rest frame's box
        m = pose.copy()
        m[:, 2] += pose[:, :2] @ [x0, y0]
        back = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        mean = (back.astype(np.float64) * ring[..., None]).sum((0, 1)) / max(float(ring.sum()), 1e-6)
        gains[i] = np.clip(mean / np.maximum(rest_mean, 1.0), 0.7, 1.4)
    return gains
