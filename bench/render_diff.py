"""Renderer output check: how far a change to the renderer moves its frames, and what it costs per frame.

    PYTHONPATH=<old tree>/src .venv/bin/python bench/render_diff.py save /tmp/frames
    PYTHONPATH=src .venv/bin/python bench/render_diff.py compare /tmp/frames

Renders one scripted talking sequence (speech-like mouth, idle motion, a nod, a shake and an expression;
blinks come from the motion) with both built-in avatars over the default colour and over an image
backdrop, a still head that only talks, blinks and changes expression, and a video avatar built from a
synthetic clip. `save` writes every frame (uncompressed .npy, about 300 MB per row at 400 frames);
`compare` prints, per row, the largest and the mean absolute difference from the saved frames (0..255)
and how many pixels per frame differ at all, plus the median CPU ms per frame (thread time, single
thread). Asserts nothing. The packs are built once and kept in the folder, so both runs draw the same pack.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from liveavatar.avatars.intake import read_portrait  # noqa: E402
from liveavatar.render.avatars import builtin_portraits  # noqa: E402
from liveavatar.render.background import Background  # noqa: E402
from liveavatar.render.builder import build_pack  # noqa: E402
from liveavatar.render.face import FaceState  # noqa: E402
from liveavatar.render.loop import FrameRenderer, LoopRenderer  # noqa: E402
from liveavatar.render.motion import Motion  # noqa: E402
from liveavatar.render.pack import AvatarPack  # noqa: E402
from liveavatar.render.renderer import Renderer  # noqa: E402
from render import backdrop, speech, synthetic_clip  # noqa: E402

FPS = 25


def photo_pack(folder: Path, avatar_id: str) -> AvatarPack:
    file = folder / f"{avatar_id}.npz"
    if not file.exists():
        name, gender, path = builtin_portraits()[avatar_id]
        build_pack(cv2.imread(str(path)), avatar_id=avatar_id, name=name, gender=gender).save(file)
    return AvatarPack.load(file)


def video_pack(folder: Path) -> AvatarPack:
    file = folder / "video.npz"
    if not file.exists():
        avatar_id = next(iter(builtin_portraits()))
        name, _, path = builtin_portraits()[avatar_id]
        data = synthetic_clip(cv2.imread(str(path)), 8.0)
        portrait = read_portrait(data)
        pack = build_pack(portrait.image, avatar_id=avatar_id, name=name, clip=data, clip_at=portrait.seconds)
        pack.save(file)
    return AvatarPack.load(file)


def talking(frames: int) -> list[FaceState]:
    mouth = speech(frames, 1)
    motion = Motion(seed=1)
    motion.start_action("nod", 3.0)
    motion.start_expression("happiness", 6.0)
    motion.start_action("shake", 9.0)
    return [motion.apply(FaceState(mouth=mouth[i]), i / FPS) for i in range(frames)]


def still(frames: int) -> list[FaceState]:
    mouth = speech(frames, 3)
    return [
        FaceState(mouth=mouth[i], blink=float(i % 50 > 45), smile=0.3 * (i % 100 > 50), brows=0.5 * (i % 70 > 40))
        for i in range(frames)
    ]


def rows(folder: Path, frames: int) -> Iterator[tuple[str, Callable[[], FrameRenderer], list[FaceState]]]:
    states = talking(frames)
    for avatar_id in builtin_portraits():
        yield f"{avatar_id} colour", lambda a=avatar_id: Renderer(photo_pack(folder, a)), states
        image = Background.from_bytes(backdrop())
        yield f"{avatar_id} image", lambda a=avatar_id, b=image: Renderer(photo_pack(folder, a), b), states
    first = next(iter(builtin_portraits()))
    yield f"{first} still head", lambda: Renderer(photo_pack(folder, first)), still(frames)
    yield "video loop", lambda: LoopRenderer(video_pack(folder)), states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("save", "compare"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"{'row':<22}{'max abs':>9}{'mean abs':>11}{'px/frame':>10}{'cpu ms':>8}")
    for name, make, states in rows(args.folder, args.frames):
        renderer = make()
        file = args.folder / f"{name.replace(' ', '_')}.npy"
        w, h = renderer.size
        if args.mode == "save":
            saved = np.lib.format.open_memmap(file, "w+", np.uint8, (len(states), h, w, 3))
        else:
            saved = np.load(file, mmap_mode="r")
        worst, total, moved, cpu = 0, 0.0, 0, []
        for i, state in enumerate(states):
            c0 = time.thread_time()
            frame = renderer.render(state)
            cpu.append(time.thread_time() - c0)
            if args.mode == "save":
                saved[i] = frame
                continue
            d = np.abs(frame.astype(np.int16) - saved[i].astype(np.int16))
            worst, total, moved = max(worst, int(d.max())), total + float(d.mean()), moved + int(d.any(2).sum())
        ms = float(np.median(cpu[FPS:])) * 1e3
        n = len(states)
        print(f"{name:<22}{worst:>9}{total / n:>11.6f}{moved / n:>10.1f}{ms:>8.2f}")


if __name__ == "__main__":
    main()
