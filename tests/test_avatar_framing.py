"""Framing: packs show head and shoulders like a presenter on a call, or the photo as it was framed."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("size", [(720, 720), (1280, 720)])
def test_packs_build_at_the_configured_video_size(size: tuple[int, int]) -> None:
    from liveavatar.render.face import FaceState
    from liveavatar.render.renderer import Renderer

    for avatar_id, (name, _, path) in builtin_portraits().items():
        pack = build_pack(cv2.imread(str(path)), avatar_id=avatar_id, name=name, size=size)
        assert pack.size == size
        frame = Renderer(pack).render(FaceState())
        assert frame.shape == (size[1], size[0], 3)
        nose_x, nose_y = pack.landmarks[1, :2]
        assert 0.3 * size[0] < nose_x < 0.7 * size[0] and 0.25 * size[1] < nose_y < 0.65 * size[1]


def test_a_server_streams_at_its_video_size(tmp_path: Path, pack_dir: Path) -> None:
    import asyncio

    from apiclient import Api
    from liveavatar.client import Connection
    from servers import Server, create_key, running

    env = {"LIVEAVATAR_PACK_DIR": str(pack_dir), "LIVEAVATAR_VIDEO_SIZE": "960x540"}
    with running(Server(data_dir=tmp_path, env=env)) as server:
        api = Api(server.url, key=create_key(server.data_dir, "wide", server.env))
        session = api.create_session(avatar_id="grace_hopper")

        async def first_frames() -> list[tuple[int, int]]:
            conn = await Connection.join(session["credentials"], ice_hosts=["127.0.0.1"])
            try:
                return [((f := await asyncio.wait_for(conn.video.get(), 10)).width, f.height) for _ in range(3)]
            finally:
                await conn.aclose()

        assert asyncio.run(first_frames()) == [(960, 540)] * 3
