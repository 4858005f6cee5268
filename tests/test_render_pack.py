"""Avatar packs: building the built-in portraits, the fold check, save/load, refusing unusable photos, versions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveavatar.errors import ParamError
from liveavatar.render.avatars import builder_sources, builder_version, builtin_portraits
from liveavatar.render.builder import build_pack
from liveavatar.render.detection import MIN_FACE_PX
from liveavatar.render.fields import check_folds
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, AvatarPack


@pytest.fixture(scope="module")
def packs() -> dict[str, AvatarPack]:
    """Both built-in avatars, built once for the module."""
    return {
        avatar_id: build_pack(cv2.imread(str(path)), avatar_id=avatar_id, name=name, gender=gender)
        for avatar_id, (name, gender, path) in builtin_portraits().items()
    }


def test_builtin_portraits_are_found() -> None:
    found = builtin_portraits()
    assert set(found) == {"astronaut", "grace_hopper"}
    assert found["astronaut"][:2] == ("Eileen", "female")
    assert found["grace_hopper"][:2] == ("Grace", "female")
    for _, _, path in found.values():
        assert path.is_file()


@pytest.mark.parametrize("avatar_id", ["astronaut", "grace_hopper"])
def test_builtin_pack_builds_without_folds(packs: dict[str, AvatarPack], avatar_id: str) -> None:
    pack = packs[avatar_id]
    name, gender, _ = builtin_portraits()[avatar_id]
    assert (pack.avatar_id, pack.name, pack.gender) == (avatar_id, name, gender)
    assert pack.size == (512, 512)
    assert pack.image.shape == (512, 512, 3) and pack.image.dtype == np.uint8
    assert set(pack.fields) == set(MOUTH_FIELDS) | set(FACE_FIELDS)
    assert pack.meta["min_jacobian"] > 0.05  # the mesh check at build time
    assert check_folds(pack) > 0.05  # the stored fields, singly and mixed
    top, bottom = pack.band
    assert 0 <= top < bottom <= 512
    # the person covers the face and the mask leaves the corners to the background
    nose = pack.landmarks[1, :2].astype(int)
    assert pack.alpha[nose[1], nose[0]] == 255
    assert pack.alpha[0, 0] == 0 and pack.alpha[0, -1] == 0


def test_grace_is_cropped_to_head_and_shoulders(packs: dict[str, AvatarPack]) -> None:
    lm = packs["grace_hopper"].landmarks
    assert 0.3 * 512 < lm[1, 1] < 0.6 * 512  # nose near the middle, not cut off
    assert lm[152, 1] < 0.75 * 512  # room for the shoulders under the chin


def test_save_load_round_trip(packs: dict[str, AvatarPack], tmp_path: Path) -> None:
    pack = packs["astronaut"]
    path = tmp_path / "astronaut.npz"
    pack.save(path)
    assert path.stat().st_size < 10 * 1024 * 1024
    back = AvatarPack.load(path)
    assert (back.avatar_id, back.name, back.gender) == ("astronaut", "Eileen", "female")
    assert back.band == pack.band and back.pivot == pack.pivot and back.shoulder_row == pack.shoulder_row
    assert np.array_equal(back.image, pack.image) and np.array_equal(back.alpha, pack.alpha)
    assert np.array_equal(back.landmarks, pack.landmarks)
    assert np.array_equal(back.teeth, pack.teeth)
    for name, field in pack.fields.items():
        assert (back.fields[name].x, back.fields[name].y) == (field.x, field.y)
        assert np.array_equal(back.fields[name].data, field.data)
    for name, delta in pack.deltas.items():
        assert np.allclose(back.deltas[name], delta)
    for a, b in zip(back.eyes, pack.eyes, strict=True):
        assert (a.x, a.y, a.band) == (b.x, b.y, b.band)
        assert np.array_equal(a.lid, b.lid) and np.array_equal(a.upper, b.upper)
    assert back.meta == pack.meta


def test_load_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a pack at all")
    with pytest.raises(ParamError, match="not an avatar pack"):
        AvatarPack.load(path)


def test_progress_is_reported_in_order() -> None:
    _, _, path = builtin_portraits()["astronaut"]
    seen: list[tuple[str, float]] = []
    build_pack(cv2.imread(str(path)), avatar_id="a", name="A", progress=lambda stage, frac: seen.append((stage, frac)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(stage for stage, _ in seen)


def test_photo_without_a_face_is_refused() -> None:
    flat = np.full((512, 512, 3), (40, 120, 200), np.uint8)
    with pytest.raises(ParamError, match="no face"):
        build_pack(flat, avatar_id="x", name="X")


def test_tiny_face_is_refused() -> None:
    _, _, path = builtin_portraits()["astronaut"]
    small = cv2.resize(cv2.imread(str(path)), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    with pytest.raises(ParamError, match="too small") as info:
        build_pack(small, avatar_id="x", name="X")
    assert f"at least {MIN_FACE_PX}" in info.value.msg


def test_tiny_image_and_wrong_types_are_refused() -> None:
    with pytest.raises(ParamError, match="too small"):
        build_pack(np.zeros((64, 64, 3), np.uint8), avatar_id="x", name="X")
    with pytest.raises(ParamError, match="8-bit"):
        build_pack(np.zeros((512, 512, 3), np.float32), avatar_id="x", name="X")


def test_builder_version_covers_every_module_the_build_imports() -> None:
    # a fresh interpreter: what importing the builder really loads, whatever this test process imported before
    code = "import sys, liveavatar.render.builder; print(*(m for m in sys.modules if m.startswith('liveavatar.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    hashed = {path.stem for path in builder_sources()}
    assert {
        name.removeprefix("liveavatar.render.") for name in loaded if name.startswith("liveavatar.render.")
    } == hashed
    assert {"builder", "pack", "landmarks", "detection", "matting", "mesh", "fields", "appearance"} <= hashed


def test_builder_version_changes_with_any_builder_module(tmp_path: Path) -> None:
    for path in builder_sources():
        shutil.copy(path, tmp_path / path.name)
    before = builder_version(tmp_path)
    assert before == builder_version()
    for path in builder_sources(tmp_path):
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert builder_version(tmp_path) != before, path.name
        path.write_bytes(original)
    assert builder_version(tmp_path) == before
