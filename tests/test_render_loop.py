"""Video avatars: a clip with known head motion is tracked, looped forth and back and given a speaking mouth."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from liveavatar.avatars.intake import read_portrait
from liveavatar.media import VIDEO_FPS
from liveavatar.render.avatars import AvatarRegistry, builtin_portraits
from liveavatar.render.builder import build_pack
from liveavatar.render.detection import detect, mouth_opening
from liveavatar.render.face import FaceState
from liveavatar.render.landmarks import EYES
from liveavatar.render.loop import LoopRenderer, renderer_for
from liveavatar.render.loop_geometry import STABLE
from liveavatar.render.motion import Motion
from liveavatar.render.pack import AvatarPack
from liveavatar.render.renderer import Renderer
from liveavatar.session.avatar import AvatarSource

SECONDS = 3.0
OPEN = np.array([0.8, 0.1, 0.0, 0.0, 0.0], np.float32)
BLINK = (1.0, 1.24)
"""Seconds of the clip in which the eyes are drawn closed."""


def motion(t: float, centre: tuple[float, float]) -> np.ndarray[Any, Any]:
    """The known head motion at time t: a similarity (2 x 3) about the face's centre (tilt, scale, shift)."""
    angle = 3.0 * np.sin(2 * np.pi * t / 2.5)
    scale = 1.0 + 0.03 * np.sin(2 * np.pi * t / 3.7)
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += [6.0 * np.sin(2 * np.pi * t / 4.0), 3.0 * np.sin(2 * np.pi * t / 3.0)]
    return np.asarray(m, np.float64)


def closed_eyes(image: np.ndarray[Any, Any], lm: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The portrait with both eyes painted shut in the skin colour under them."""
    out = image.copy()
    for eye in EYES:
        pts = lm[list(eye[0] + eye[1]), :2]
        centre = pts.mean(0)
        width = float(np.ptp(pts[:, 0]))
        below = np.round(centre + [0.0, 0.45 * width]).astype(int)
        skin = image[below[1] - 2 : below[1] + 3, below[0] - 2 : below[0] + 3].reshape(-1, 3).mean(0)
        axes = (int(0.62 * width), int(0.3 * width))
        cv2.ellipse(out, (int(centre[0]), int(centre[1])), axes, 0, 0, 360, skin.tolist(), -1, cv2.LINE_AA)
        lash = (int(centre[0] - 0.5 * width), int(centre[1] + 2)), (int(centre[0] + 0.5 * width), int(centre[1] + 2))
        cv2.line(out, *lash, (40, 40, 60), 1, cv2.LINE_AA)
    return cv2.GaussianBlur(out, (3, 3), 0)


@dataclass
class Clip:
    """A synthetic talking-head clip: MP4 bytes, the base portrait's landmarks and the motion's centre."""

    data: bytes
    landmarks: np.ndarray[Any, Any]
    centre: tuple[float, float]


def make_clip(image: np.ndarray[Any, Any], seconds: float = SECONDS) -> Clip:
    """An H.264 clip (PyAV) of the portrait moving with `motion` and blinking once."""
    lm = detect(image)
    centre = (float(lm[1, 0]), float(lm[1, 1]))
    shut = closed_eyes(image, lm)
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(int(seconds * VIDEO_FPS)):
            t = i / VIDEO_FPS
            base = shut if BLINK[0] <= t < BLINK[1] else image
            size = (image.shape[1], image.shape[0])
            frame = cv2.warpAffine(base, motion(t, centre), size, borderMode=cv2.BORDER_REPLICATE)
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="bgr24")
            for packet in stream.encode(video):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Clip(buffer.getvalue(), lm, centre)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Clip, AvatarPack]:
    """The astronaut clip, and its video pack (saved and loaded back, as a server would)."""
    _, _, path = builtin_portraits()["astronaut"]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    clip = make_clip(image)
    portrait = read_portrait(clip.data)
    assert portrait.kind == "video"
    pack = build_pack(portrait.image, avatar_id="astro", name="Eileen", clip=clip.data, clip_at=portrait.seconds)
    file = Path(tmp_path_factory.mktemp("packs")) / "astro.npz"
    pack.save(file)
    return clip, AvatarPack.load(file)


def apply(m: np.ndarray[Any, Any], pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(pts[:, :2] @ m[:, :2].T + m[:, 2], np.float64)


def expected(clip: Clip, pack: AvatarPack, k: int, pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Where the known motion puts source-portrait points in the loop's k-th frame (pack pixels)."""
    assert pack.loop is not None
    t = pack.loop.start + k / pack.loop.fps
    return apply(pack.loop.crop, apply(motion(t, clip.centre), pts))


def rest_expected(clip: Clip, pack: AvatarPack, k: int, pts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Where the known motion carries points of the pack's rest frame (pack pixels) in the loop's k-th frame."""
    assert pack.loop is not None
    t = pack.loop.start + pack.loop.rest / pack.loop.fps
    back = apply(
        cv2.invertAffineTransform(motion(t, clip.centre)), apply(cv2.invertAffineTransform(pack.loop.crop), pts)
    )
    return expected(clip, pack, k, back)


def test_the_build_tracks_the_face_in_every_frame(built: tuple[Clip, AvatarPack]) -> None:
    clip, pack = built
    assert pack.kind == "loop" and pack.loop is not None
    loop = pack.loop
    assert len(loop.frames) == int(SECONDS * VIDEO_FPS) == len(loop.poses) == len(loop.gains)
    rest = pack.landmarks[list(STABLE)].astype(np.float64)
    errors = []
    for k, pose in enumerate(loop.poses.astype(np.float64)):
        errors.append(np.linalg.norm(apply(pose, rest) - expected(clip, pack, k, clip.landmarks[list(STABLE)]), axis=1))
    err = np.array(errors)
    # the motion spans ~ +-14 px at the face; the tracked pose follows it to within a few pixels
    assert np.median(err) < 2.5 and np.percentile(err, 95) < 5.0, (np.median(err), np.percentile(err, 95))
    assert np.all(np.abs(loop.gains - 1.0) < 0.1)  # the light does not change in this clip


def test_the_loop_turns_around_without_a_jump(built: tuple[Clip, AvatarPack]) -> None:
    _, pack = built
    renderer = renderer_for(pack)
    assert isinstance(renderer, LoopRenderer) and renderer.size == pack.size
    n = renderer.length
    frames = [renderer.render(FaceState()).astype(np.float32) for _ in range(2 * (2 * n - 2) + 1)]
    steps = np.array([np.abs(b - a).mean() for a, b in zip(frames, frames[1:], strict=False)])
    # steps into and out of the calls that show the clip's last (n - 1) or first (2n - 2) frame again
    turns = [c + d for c in (n - 1, 2 * n - 2, 3 * n - 3) for d in (-1, 0)]
    regular = np.delete(steps, turns)
    # turning around shows two frames the clip itself shows in a row: no step larger than the clip's own
    assert steps[turns].max() <= regular.max() + 0.5, (steps[turns], regular.max())
    assert np.abs(frames[2 * n - 2] - frames[0]).mean() < 0.5  # one full cycle later: the same frame
    jump = np.abs(frames[n - 1] - frames[0]).mean()  # what restarting the clip from its start would show
    assert jump > 3 * steps[turns].max()


def test_the_mouth_opens_when_speaking_and_stays_on_the_moving_face(built: tuple[Clip, AvatarPack]) -> None:
    clip, pack = built
    assert pack.loop is not None
    n = len(pack.loop.frames)
    lips = [13, 14, 61, 291]
    centres_seen, centres_known = [], []
    for k in (3, n // 3, (2 * n) // 3, n - 4):
        renderer = LoopRenderer(pack)
        for _ in range(k):
            renderer.render(FaceState())
        idle = detect(renderer.render(FaceState()).copy())
        renderer = LoopRenderer(pack)
        for _ in range(k):
            renderer.render(FaceState())
        speaking = detect(renderer.render(FaceState(mouth=OPEN)).copy())
        assert mouth_opening(idle) < 0.12 and mouth_opening(speaking) > 0.25, (k, mouth_opening(idle))
        # the closed mouth sits where the known motion puts the portrait's mouth
        known = rest_expected(clip, pack, k, pack.landmarks[[61, 291]]).mean(0)
        seen = idle[[61, 291], :2].mean(0)
        assert np.linalg.norm(seen - known) < 4.0, (k, seen, known)
        centres_seen.append(speaking[lips, :2].mean(0))
        centres_known.append(rest_expected(clip, pack, k, pack.landmarks[lips]).mean(0))
    # the speaking mouth follows the face: it moves as the face moves, to within a few pixels
    seen_moves = np.array(centres_seen) - centres_seen[0]
    known_moves = np.array(centres_known) - centres_known[0]
    assert np.abs(known_moves).max() > 4.0
    assert np.abs(seen_moves - known_moves).max() < 4.0, (seen_moves, known_moves)


def test_an_idle_session_keeps_playing_the_clip(built: tuple[Clip, AvatarPack]) -> None:
    # a photo's idle frames may repeat while nothing moves; a clip's never do
    _, pack = built
    source = AvatarSource(renderer_for(pack), Motion(seed=1))
    drawings = [source.video_picture(k / VIDEO_FPS) for k in range(6)]
    frames = [draw().copy() for draw in drawings if draw is not None]
    assert len(frames) == 6
    assert not any(np.array_equal(a, b) for a, b in zip(frames, frames[1:], strict=False))


def test_a_photo_pack_keeps_the_photo_renderer(built: tuple[Clip, AvatarPack]) -> None:
    _, pack = built
    photo = replace(pack, loop=None)
    assert photo.kind == "photo" and isinstance(renderer_for(photo), Renderer)


def test_a_video_avatar_is_rebuilt_from_its_kept_clip(built: tuple[Clip, AvatarPack], tmp_path: Path) -> None:
    clip, _ = built
    folder = tmp_path / "custom" / "row1"
    folder.mkdir(parents=True)
    (folder / "clip").write_bytes(clip.data)
    portrait = read_portrait(clip.data)
    cv2.imwrite(str(folder / "portrait.png"), portrait.image)
    (folder / "avatar.json").write_text(json.dumps({"avatar_id": "astro", "name": "Eileen", "owner_id": 1}))
    registry = AvatarRegistry(tmp_path)  # no pack on disk, as after an upgrade of the builder
    avatar = registry.get("astro", 1)
    assert avatar is not None
    pack = registry.pack(avatar.pack_key)
    assert pack.kind == "loop" and pack.loop is not None and len(pack.loop.frames) == int(SECONDS * VIDEO_FPS)
