"""Framing: packs show head and shoulders like a presenter on a call, or the photo as it was framed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.builder import build_pack
from liveavatar.render.detection import FACE_SHARE
from liveavatar.render.pack import AvatarPack


def face_width(pack: AvatarPack) -> float:
    """Cheek to cheek, in pixels of the 512 frame."""
    return float(np.linalg.norm(pack.landmarks[454, :2] - pack.landmarks[234, :2]))


@pytest.fixture(scope="module")
def packs() -> dict[tuple[str, str], AvatarPack]:
    """Both built-in portraits in both framings."""
    built = {}
    for avatar_id, (name, _, path) in builtin_portraits().items():
        image = cv2.imread(str(path))
        for framing in ("presenter", "original"):
            built[avatar_id, framing] = build_pack(image, avatar_id=avatar_id, name=name, framing=framing)
    return built


@pytest.mark.parametrize("avatar_id", ["astronaut", "grace_hopper"])
def test_presenter_framing_gives_the_face_a_sensible_share(
    packs: dict[tuple[str, str], AvatarPack], avatar_id: str
) -> None:
    pack = packs[avatar_id, "presenter"]
    assert pack.meta["framing"] == "presenter" and pack.image.shape == (512, 512, 3)
    share = face_width(pack) / 512
    print(f"{avatar_id}: face {face_width(pack):.0f} px wide in 512 ({share:.0%})")
    assert FACE_SHARE - 0.03 <= share <= 0.40
    lm = pack.landmarks
    assert 0.3 * 512 < lm[1, 1] < 0.6 * 512  # nose near the middle
    assert lm[10, 1] - (lm[152, 1] - lm[10, 1]) * 0.4 > 0  # room above the forehead for the hair
    assert lm[152, 1] < 0.8 * 512  # shoulders below the chin
    assert 0.3 * 512 < lm[1, 0] < 0.7 * 512


def test_original_framing_keeps_the_photo_as_it_was(packs: dict[tuple[str, str], AvatarPack]) -> None:
    original, presenter = packs["astronaut", "original"], packs["astronaut", "presenter"]
    assert original.meta["framing"] == "original"
    # the astronaut's photo is 512 px square: as it was, her face is ~90 px wide; the presenter crop zooms in
    assert 80 < face_width(original) < 100
    assert face_width(presenter) > 1.3 * face_width(original)
    # Grace's photo is already a close portrait: both framings keep her face's size
    assert abs(face_width(packs["grace_hopper", "original"]) - face_width(packs["grace_hopper", "presenter"])) < 2
