"""The per-frame renderer: frame format, rest frame, mouth, blink, head motion and backgrounds."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from liveavatar.errors import ParamError
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.background import Background
from liveavatar.render.builder import build_pack
from liveavatar.render.face import MOUTH_BASES, FaceState
from liveavatar.render.pack import AvatarPack
from liveavatar.render.renderer import Renderer

Frame = npt.NDArray[np.uint8]


@pytest.fixture(scope="module", params=["astronaut", "grace_hopper"])
def pack(request: pytest.FixtureRequest) -> AvatarPack:
    name, gender, path = builtin_portraits()[request.param]
    return build_pack(cv2.imread(str(path)), avatar_id=request.param, name=name, gender=gender)


def mouth(**weights: float) -> npt.NDArray[np.float32]:
    m = np.zeros(len(MOUTH_BASES), np.float32)
    for k, v in weights.items():
        m[MOUTH_BASES.index(k)] = v
    return m


def box(pack: AvatarPack, idx: list[int], grow: int) -> tuple[slice, slice]:
    pts = pack.landmarks[idx, :2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - grow
    x1, y1 = np.ceil(pts.max(0)).astype(int) + grow
    return slice(y0, y1), slice(x0, x1)


def diff(a: Frame, b: Frame) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


MOUTH = [61, 291, 0, 17]
EYES = [33, 133, 159, 145, 362, 263, 386, 374]


def test_frame_size_and_type(pack: AvatarPack) -> None:
    r = Renderer(pack)
    assert r.size == (512, 512)
    frame = r.render(FaceState())
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8


def test_rest_frame_is_the_portrait_over_the_background(pack: AvatarPack) -> None:
    r = Renderer(pack, Background.solid("#204060"))
    rest = r.render(FaceState()).copy()
    a = pack.alpha[..., None].astype(np.float64) / 255
    expected = pack.image * a + np.array([0x60, 0x40, 0x20]) * (1 - a)
    assert np.abs(rest.astype(np.float64) - expected).max() <= 1.0
    assert np.array_equal(r.render(FaceState()), rest)


def test_mouth_opens_and_returns_to_rest(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    ys, xs = box(pack, MOUTH, 4)
    for weights in ({"jaw_open": 0.7}, {"lips_round": 1.0, "jaw_open": 0.3}, {"lips_wide": 1.0}):
        opened = r.render(FaceState(mouth=mouth(**weights))).copy()
        assert diff(opened[ys, xs], rest[ys, xs]) > 4.0, weights
        # far from the face nothing moves
        assert np.array_equal(opened[-40:], rest[-40:])
        assert np.array_equal(opened[:, :24], rest[:, :24])
    assert np.array_equal(r.render(FaceState()), rest)


def test_jaw_opening_grows_with_its_weight(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    ys, xs = box(pack, MOUTH, 4)
    changes = [diff(r.render(FaceState(mouth=mouth(jaw_open=w)))[ys, xs], rest[ys, xs]) for w in (0.2, 0.5, 1.0)]
    assert changes[0] < changes[1] < changes[2]


def test_closed_lips_keep_the_mouth_shut(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    ys, xs = box(pack, MOUTH, 4)
    opened = diff(r.render(FaceState(mouth=mouth(jaw_open=0.8)))[ys, xs], rest[ys, xs])
    closed = diff(r.render(FaceState(mouth=mouth(jaw_open=0.8, lips_closed=1.0)))[ys, xs], rest[ys, xs])
    assert closed < 0.5 * opened


def test_blink_changes_the_eyes_only(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    blink = r.render(FaceState(blink=1.0)).copy()
    ys, xs = box(pack, EYES, 2)
    assert diff(blink[ys, xs], rest[ys, xs]) > 3.0
    outside = np.ones(rest.shape[:2], bool)
    for eye in pack.eyes:  # the closed-lid patches
        outside[eye.y - 1 : eye.y + eye.lid.shape[0] + 1, eye.x - 1 : eye.x + eye.lid.shape[1] + 1] = False
    assert np.array_equal(blink[outside], rest[outside])
    assert np.array_equal(r.render(FaceState()), rest)


def test_head_motion_moves_the_head_not_the_frame_edges(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    moved = r.render(FaceState(yaw=4.0, pitch=-3.0, roll=3.0, dx=3.0, dy=-1.0)).copy()
    ys, xs = box(pack, [10, 152, 234, 454], 0)
    assert diff(moved[ys, xs], rest[ys, xs]) > 3.0
    assert np.array_equal(moved[-8:], rest[-8:])
    assert np.array_equal(moved[:8, :8], rest[:8, :8])


def test_brows_and_smile_change_the_face(pack: AvatarPack) -> None:
    r = Renderer(pack)
    rest = r.render(FaceState()).copy()
    for state in (FaceState(smile=1.0), FaceState(smile=-1.0), FaceState(brows=1.0), FaceState(brows=-1.0)):
        assert diff(r.render(state), rest) > 0.02


def test_background_image_fills_the_frame(pack: AvatarPack) -> None:
    h, w = 300, 200  # portrait-shaped: scaled up to cover 512 x 512 and cropped
    gradient = np.zeros((h, w, 3), np.uint8)
    gradient[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    gradient[..., 2] = 180
    ok, png = cv2.imencode(".png", gradient)
    assert ok
    bg = Background.from_bytes(png.tobytes())
    full = bg.frame(512, 512)
    assert full.shape == (512, 512, 3)
    assert full[:, :3, 1].mean() < 20 and full[:, -3:, 1].mean() > 235  # stretched edge to edge
    r = Renderer(pack, bg)
    frame = r.render(FaceState(mouth=mouth(jaw_open=0.5), roll=2.0)).copy()
    assert np.abs(frame[:4, :4].astype(int) - full[:4, :4]).max() <= 1
    assert np.abs(frame[:4, -4:].astype(int) - full[:4, -4:]).max() <= 1
    r.set_background(None)
    assert not np.array_equal(r.render(FaceState())[:4, :4], frame[:4, :4])


def test_background_bytes_are_checked() -> None:
    with pytest.raises(ParamError, match="PNG, JPEG"):
        Background.from_bytes(b"GIF89a not supported here")
    huge = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (50_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    with pytest.raises(ParamError, match="too large"):
        Background.from_bytes(huge)
    with pytest.raises(ParamError, match="colour"):
        Background.solid("#12345")
    assert Background.solid("#ff8000").color == (0, 128, 255)


def test_a_frame_depends_only_on_its_state(pack: AvatarPack) -> None:
    busy = Renderer(pack)
    for i in range(30):
        busy.render(
            FaceState(
                mouth=mouth(jaw_open=0.9, lips_round=0.5),
                yaw=5.0,
                pitch=4.0,
                roll=3.0,
                smile=0.8,
                brows=1.0,
                blink=float(i % 3 == 0),
                dy=0.5,
            )
        )
    state = FaceState(mouth=mouth(jaw_open=0.3), yaw=1.0, dy=-0.7)
    assert np.array_equal(busy.render(state), Renderer(pack).render(state))


@pytest.mark.parametrize("background", [None, Background.solid("#204060"), "image"])
def test_speech_over_a_held_pose_redraws_the_mouth_alone_bit_for_bit(
    pack: AvatarPack, background: Background | str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if background == "image":
        ramp = np.dstack([np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))] * 3)
        background = Background(image=ramp)
    assert not isinstance(background, str)
    r = Renderer(pack, background)
    whole = Renderer._redraw
    redrawn: list[Renderer] = []

    def counted(self: Renderer, *args: object) -> None:
        redrawn.append(self)
        whole(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Renderer, "_redraw", counted)
    rng = np.random.default_rng(7)
    poses = [
        {},  # no head motion: the maps are the grid
        {"yaw": 2.0, "pitch": -1.5, "roll": 1.2, "dx": 0.8, "dy": -0.4},
        {"yaw": 2.0, "pitch": -1.5, "roll": 1.2, "dx": 0.8, "dy": -0.4, "smile": 0.6},  # a mouth field
        {"yaw": -3.0, "dy": 0.9, "brows": 0.7},  # the brows are solved too: every frame is redrawn whole
        {"yaw": -3.0, "dy": 0.9, "blink": 0.6},
    ]
    for pose in poses:
        for k in range(6):
            weights = rng.uniform(0, 1, len(MOUTH_BASES)) * (k % 3 != 2)  # shut mouths too
            weights[MOUTH_BASES.index("lips_closed")] *= k % 2
            state = FaceState(mouth=weights.astype(np.float32), **pose)
            assert np.array_equal(r.render(state), Renderer(pack, background).render(state)), (pose, k)
    # whole: the first pose, the second, every frame with the brows, and the next one (the brows to undo)
    assert sum(x is r for x in redrawn) == 1 + 1 + 6 + 1
