"""Renderer benchmark: milliseconds per 512x512 frame on one core, for both built-in avatars, while talking.

    .venv/bin/python bench/render.py [--frames N] [--images docs/images] [--clip-seconds S] [--pipeline]

With --pipeline it also splits a whole outbound video frame into its stages, as a session runs them (the
session's AvatarSource and video track, the VP8 encoder the server's peers use, RTP + SRTP), idle and talking.

Builds each built-in pack (timed; size on disk), then renders N frames of speech-like mouth motion with idle
motion on top, pinned to one core (OpenCV and BLAS single-threaded). Prints median and p95 per frame, wall
clock and CPU time. With --images it also writes the sample frames kept in docs/images/. Asserts nothing.
A last row does the same for a video avatar ("<id>-video"), built from an S-second clip of the first
portrait with synthetic head motion and blinks (no real talking-head clip ships in any package), and prints
the memory the pack and its decoded loop hold once loaded (numpy allocations, traced).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: no BLAS thread spinning on the other core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from liveavatar.avatars.intake import read_portrait  # noqa: E402
from liveavatar.media import UnpacedClock  # noqa: E402
from liveavatar.render.avatars import builtin_portraits  # noqa: E402
from liveavatar.render.background import Background  # noqa: E402
from liveavatar.render.builder import build_pack  # noqa: E402
from liveavatar.render.detection import detect  # noqa: E402
from liveavatar.render.face import MOUTH_BASES, FaceState  # noqa: E402
from liveavatar.render.loop import FrameRenderer, LoopRenderer  # noqa: E402
from liveavatar.render.motion import Motion  # noqa: E402
from liveavatar.render.pack import AvatarPack  # noqa: E402
from liveavatar.render.renderer import Renderer  # noqa: E402
from liveavatar.session.avatar import AvatarSource  # noqa: E402
from liveavatar.transport.tracks import AvatarVideoTrack, Drawing, draw_pending  # noqa: E402
from liveavatar.transport.vp8 import TalkingHeadVp8Encoder  # noqa: E402

FPS = 25
VISEMES = {  # rough mouth shapes, as weights over MOUTH_BASES
    "A": (0.75, 0.1, 0.0, 0.0, 0.0),
    "E": (0.25, 0.8, 0.0, 0.0, 0.0),
    "O": (0.35, 0.0, 0.9, 0.0, 0.0),
    "U": (0.15, 0.0, 1.0, 0.0, 0.0),
    "M": (0.0, 0.0, 0.0, 1.0, 0.0),
    "F": (0.1, 0.1, 0.0, 0.0, 1.0),
    "rest": (0.0, 0.0, 0.0, 0.0, 0.0),
}


def speech(frames: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Mouth weights per frame: a random viseme every 60-140 ms, eased like coarticulated speech."""
    rng = np.random.default_rng(seed)
    names = list(VISEMES)
    targets = np.zeros((frames, len(MOUTH_BASES)))
    t, i = 0.0, 0
    while i < frames:
        hold = rng.uniform(0.06, 0.14)
        shape = np.array(VISEMES[names[rng.integers(len(names))]])
        n = max(1, round(hold * FPS))
        targets[i : i + n] = shape
        i += n
        t += hold
    out = np.zeros_like(targets)
    for k in range(1, frames):
        out[k] = out[k - 1] + 0.55 * (targets[k] - out[k - 1])
    return out.astype(np.float32)


def backdrop() -> bytes:
    """A soft out-of-focus studio backdrop, as PNG bytes (exercises the image path)."""
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.dstack([120 + 60 * xx / w, 90 + 50 * yy / h, 60 + 40 * (1 - xx / w)])
    rng = np.random.default_rng(4)
    for _ in range(18):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 60)
        glow = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        base += glow * rng.uniform(20, 60, size=3)
    img = cv2.GaussianBlur(np.clip(base, 0, 255).astype(np.uint8), (0, 0), 3)
    ok, png = cv2.imencode(".png", img)
    assert ok
    return png.tobytes()


def sample_images(pack: AvatarPack, out: Path) -> list[Path]:
    """The frames kept in docs/images for one avatar."""
    shots = {
        "rest": FaceState(),
        "speech_open": FaceState(mouth=np.array(VISEMES["A"], np.float32)),
        "speech_o": FaceState(mouth=np.array(VISEMES["O"], np.float32)),
        "speech_e": FaceState(mouth=np.array(VISEMES["E"], np.float32)),
        "speech_m": FaceState(mouth=np.array(VISEMES["M"], np.float32)),
        "blink": FaceState(blink=1.0),
    }
    renderer = Renderer(pack)
    paths = []
    for name, state in shots.items():
        paths.append(out / f"{pack.avatar_id}_{name}.png")
        cv2.imwrite(str(paths[-1]), renderer.render(state), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    renderer.set_background(Background.from_bytes(backdrop()))
    paths.append(out / f"{pack.avatar_id}_background.png")
    state = FaceState(mouth=np.array(VISEMES["E"], np.float32) * 0.6, smile=0.4, yaw=2.0, roll=1.5)
    cv2.imwrite(str(paths[-1]), renderer.render(state), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return paths


class _TimedSource:
    """The session's media source, with the time spent deciding and drawing each new picture recorded."""

    def __init__(self, source: AvatarSource) -> None:
        self.source = source
        self.seconds = 0.0
        self.repeated = False

    @property
    def video_size(self) -> tuple[int, int]:
        return self.source.video_size

    def video_picture(self, t: float, can_repeat: bool) -> Drawing | None:
        c0 = time.process_time()
        draw = self.source.video_picture(t, can_repeat)
        self.seconds = time.process_time() - c0
        self.repeated = draw is None
        return None if draw is None else partial(self._timed, draw)

    def _timed(self, draw: Drawing) -> npt.NDArray[np.uint8]:
        c0 = time.process_time()
        frame = draw()
        self.seconds += time.process_time() - c0
        return frame

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        return self.source.audio_frame(t)


def pipeline(pack: AvatarPack, frames: int, talking: bool) -> dict[str, float]:
    """CPU ms per frame of each outbound video stage, as a session runs them (median after a warm-up)."""
    import asyncio

    import pylibsrtp
    from aiortc.rtp import RtpPacket

    mouth = speech(frames) if talking else np.zeros((frames, len(MOUTH_BASES)), np.float32)
    source = AvatarSource(Renderer(pack), Motion(seed=1))
    source.speaker.mouth_at = lambda t: mouth[min(int(round(t * FPS)), frames - 1)]  # type: ignore[method-assign]
    timed = _TimedSource(source)
    track = AvatarVideoTrack(timed, UnpacedClock())
    track.encoder_draws = True  # as in a session
    encoder = TalkingHeadVp8Encoder()
    srtp = pylibsrtp.Session(pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    stages: dict[str, list[float]] = {k: [] for k in ("render", "convert", "encode", "rtp+srtp")}
    sent, repeats, seq = 0, 0, 0
    loop = asyncio.new_event_loop()
    try:
        for _ in range(frames):
            c0 = time.process_time()
            frame = loop.run_until_complete(track.recv())
            draw_pending(frame)  # as the encoder does first, in its thread
            c1 = time.process_time()
            payloads, timestamp = encoder.encode(frame)
            c2 = time.process_time()
            for payload in payloads:
                packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=timestamp, ssrc=1)
                packet.payload = payload
                srtp.protect(packet.serialize())
                sent += len(payload)
                seq += 1
            c3 = time.process_time()
            repeats += timed.repeated
            stages["render"].append(timed.seconds)
            stages["convert"].append(c1 - c0 - timed.seconds)
            stages["encode"].append(c2 - c1)
            stages["rtp+srtp"].append(c3 - c2)
    finally:
        loop.close()
    out = {k: float(np.mean(v[FPS:])) * 1e3 for k, v in stages.items()}
    out["total"] = sum(out.values())
    out["kbps"] = sent * 8 / (frames / FPS) / 1e3
    out["redrawn %"] = 100.0 * (1 - repeats / frames)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--images", type=Path, default=None, help="write sample frames to this folder")
    parser.add_argument("--size", default="512x512", help="frame size WxH (LIVEAVATAR_VIDEO_SIZE)")
    parser.add_argument("--clip-seconds", type=float, default=20.0, help="length of the video avatar's clip")
    parser.add_argument("--pipeline", action="store_true", help="also split a sent frame into its stages")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    size = tuple(int(side) for side in args.size.lower().split("x"))
    mouth = speech(args.frames)
    print(f"{'avatar':<14}{'build s':>9}{'pack MB':>9}{'median ms':>11}{'p95 ms':>9}{'p99 ms':>9}{'cpu med':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for avatar_id, (name, gender, path) in builtin_portraits().items():
            image = cv2.imread(str(path))
            t0 = time.perf_counter()
            pack = build_pack(image, avatar_id=avatar_id, name=name, gender=gender, size=(size[0], size[1]))
            build = time.perf_counter() - t0
            file = Path(tmp) / f"{avatar_id}.npz"
            pack.save(file)
            pack = AvatarPack.load(file)
            print(f"{avatar_id:<14}{build:>9.2f}{file.stat().st_size / 1e6:>9.2f}{timed(Renderer(pack), mouth)}")
            if args.pipeline:
                for talking in (False, True):
                    split = pipeline(pack, min(args.frames, 500), talking)
                    print(
                        f"  {'talking' if talking else 'idle':<8} CPU ms per frame: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in split.items() if k not in ("kbps", "redrawn %"))
                        + f" ({split['total'] / 40 * 100:.1f}% of a core at 25 fps; {split['kbps']:.0f} kbps;"
                        f" {split['redrawn %']:.0f}% of frames drawn)"
                    )
            if args.images is not None:
                args.images.mkdir(parents=True, exist_ok=True)
                for p in sample_images(pack, args.images):
                    print(f"  wrote {p}")
        video_row(next(iter(builtin_portraits().items())), args.clip_seconds, (size[0], size[1]), mouth, Path(tmp))


def timed(renderer: FrameRenderer, mouth: npt.NDArray[np.float32]) -> str:
    """A row's timing columns: talking with idle motion, a nod and an expression; the first second is warm-up."""
    motion = Motion(seed=1)
    motion.start_action("nod", 10.0)
    motion.start_expression("happiness", 20.0)
    wall, cpu = [], []
    for i in range(len(mouth)):
        state = motion.apply(FaceState(mouth=mouth[i]), i / FPS)
        w0, c0 = time.perf_counter(), time.process_time()
        renderer.render(state)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    ms = np.array(wall[25:]) * 1e3
    cms = np.array(cpu[25:]) * 1e3
    return f"{np.median(ms):>11.2f}{np.percentile(ms, 95):>9.2f}{np.percentile(ms, 99):>9.2f}{np.median(cms):>9.2f}"


def synthetic_clip(image: npt.NDArray[np.uint8], seconds: float) -> bytes:
    """An H.264 clip of the portrait swaying (tilt, shift, scale) and blinking every ~4 s."""
    import av

    lm = detect(image)
    centre = (float(lm[1, 0]), float(lm[1, 1]))
    shut = image.copy()
    for eye in ((33, 133, 159, 145), (362, 263, 386, 374)):
        pts = lm[list(eye), :2]
        c, width = pts.mean(0), float(np.ptp(pts[:, 0]))
        skin = image[int(c[1] + 0.45 * width), int(c[0])].tolist()
        cv2.ellipse(shut, (int(c[0]), int(c[1])), (int(0.62 * width), int(0.3 * width)), 0, 0, 360, skin, -1)
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * FPS)):
            t = i / FPS
            m = cv2.getRotationMatrix2D(centre, 3.0 * np.sin(t * 2.5), 1.0 + 0.02 * np.sin(t * 1.7))
            m[:, 2] += [6.0 * np.sin(t * 1.6), 3.0 * np.sin(t * 2.1)]
            base = shut if (t % 4.0) < 0.2 else image
            frame = cv2.warpAffine(base, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), "bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def video_row(
    builtin: tuple[str, tuple[str, str, Path]],
    seconds: float,
    size: tuple[int, int],
    mouth: npt.NDArray[np.float32],
    tmp: Path,
) -> None:
    """The video avatar's row: build time (frame choice + pack + loop), pack size, ms per frame, memory held."""
    avatar_id, (name, gender, path) = builtin
    image = cv2.imread(str(path))
    data = synthetic_clip(image, seconds)
    t0 = time.perf_counter()
    portrait = read_portrait(data)
    pack = build_pack(portrait.image, avatar_id=avatar_id, name=name, size=size, clip=data, clip_at=portrait.seconds)
    build = time.perf_counter() - t0
    file = tmp / f"{avatar_id}-video.npz"
    pack.save(file)
    tracemalloc.start()
    pack = AvatarPack.load(file)
    renderer = LoopRenderer(pack)
    held = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    print(f"{'video loop':<14}{build:>9.2f}{file.stat().st_size / 1e6:>9.2f}" + timed(renderer, mouth))
    assert pack.loop is not None
    print(
        f"  video loop: {avatar_id} in a {seconds:.0f} s clip, loop of {len(pack.loop.frames)} frames "
        f"({len(pack.loop.frames) / pack.loop.fps:.1f} s, forth and back); pack and decoded loop hold {held:.0f} MB"
    )


if __name__ == "__main__":
    main()
