"""The command line: keys, avatars and offline rendering, run as a user would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np

from liveavatar.render.avatars import builtin_portraits
from servers import VENV_BIN, cli


def run(*args: str, data_dir: Path, pack_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run `liveavatar` and return the finished process (any exit code)."""
    return subprocess.run(
        [str(VENV_BIN / "liveavatar"), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "LIVEAVATAR_PACK_DIR": str(pack_dir)},
        timeout=300,
        check=False,
    )


def test_keys_create_prints_the_key_last(tmp_path: Path) -> None:
    out = cli("keys", "create", "--name", "ci", data_dir=tmp_path).strip().splitlines()
    assert out[-1].startswith("la_") and len(out[-1]) > 40
    listing = cli("keys", "list", data_dir=tmp_path)
    assert "ci" in listing and out[-1] not in listing
    missing = subprocess.run(
        [str(VENV_BIN / "liveavatar"), "keys", "revoke", "nobody", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "no API key matches" in missing.stderr


def test_render_writes_a_clip_with_speech_and_moving_mouth(tmp_path: Path, pack_dir: Path) -> None:
    clip = tmp_path / "hello.mp4"
    done = run(
        "render",
        "--avatar",
        "grace_hopper",
        "--text",
        "Hello, I am Grace.",
        "-o",
        str(clip),
        data_dir=tmp_path,
        pack_dir=pack_dir,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    with av.open(str(clip)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (512, 512)
        assert container.streams.audio, "no audio stream"
        frames = [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]
    assert 25 <= len(frames) <= 25 * 6
    changes = [float(np.abs(a - b).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    assert max(changes) > 0.3  # the face moves while it speaks
    with av.open(str(clip)) as container:
        sound = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert np.abs(sound).max() > 0.05


def test_avatar_build_adds_an_avatar_and_refuses_bad_photos(tmp_path: Path, pack_dir: Path) -> None:
    _, _, portrait = builtin_portraits()["astronaut"]
    built = run(
        "avatar",
        "build",
        str(portrait),
        "--id",
        "eileen2",
        "--name",
        "Eileen Two",
        data_dir=tmp_path,
        pack_dir=pack_dir,
    )
    assert built.returncode == 0, built.stderr
    assert "%]" in built.stdout and "ready" in built.stdout  # progress was shown
    listing = run("avatar", "list", data_dir=tmp_path, pack_dir=pack_dir)
    assert "eileen2" in listing.stdout and "astronaut" in listing.stdout
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((400, 400, 3), 128, np.uint8))
    refused = run(
        "avatar", "build", str(flat), "--id", "nobody", "--name", "Nobody", data_dir=tmp_path, pack_dir=pack_dir
    )
    assert refused.returncode == 1 and "face" in refused.stderr.lower()
    builtin = run(
        "avatar", "build", str(portrait), "--id", "astronaut", "--name", "X", data_dir=tmp_path, pack_dir=pack_dir
    )
    assert builtin.returncode == 1 and "built-in" in builtin.stderr
