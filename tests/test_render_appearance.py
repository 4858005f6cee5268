"""What the pack bakes for the face's moving parts: synthetic teeth drawn tooth by tooth, domed closed lids.

Both renderers (Python and WebGL) draw these textures unchanged, so checking the pack and the Python frames
covers the browser too (tests/test_webgl_parity.py holds the two together).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from liveavatar.render.appearance import TOOTH_EDGES
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.builder import build_pack
from liveavatar.render.face import MOUTH_BASES, FaceState
from liveavatar.render.landmarks import UPPER_INNER
from liveavatar.render.pack import TEETH_SPAN, AvatarPack
from liveavatar.render.renderer import Renderer

F32 = npt.NDArray[np.float32]


def build(name: str) -> AvatarPack:
    label, gender, path = builtin_portraits()[name]
    return build_pack(cv2.imread(str(path)), avatar_id=name, name=label, gender=gender)


@pytest.fixture(scope="module", params=["astronaut", "grace_hopper"])
def pack(request: pytest.FixtureRequest) -> AvatarPack:
    return build(request.param)


@pytest.fixture(scope="module")
def synthetic() -> AvatarPack:
    """Grace Hopper smiles with closed lips: her pack gets the synthetic teeth."""
    found = build("grace_hopper")
    assert not found.meta["photo_teeth"]
    return found


def texel(pack: AvatarPack, u: float, below: float) -> tuple[int, int]:
    """Row and column of the teeth texture at mouth-frame u and `below` mouth widths under the seam."""
    rows, cols = pack.teeth.shape[:2]
    r = (below - TEETH_SPAN[0]) / (TEETH_SPAN[1] - TEETH_SPAN[0]) * (rows - 1)
    return int(round(r)), int(round((u + 0.5) * (cols - 1)))


def luma(bgr: npt.NDArray[np.uint8]) -> F32:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.float32)


def test_synthetic_teeth_are_separate_teeth(synthetic: AvatarPack) -> None:
    """Each tooth is lighter in its middle than where it meets its neighbours, and notched at the tips."""
    gray = luma(np.ascontiguousarray(synthetic.teeth[..., :3]))
    alpha = synthetic.teeth[..., 3].astype(np.float32)
    for side in (-1, 1):
        for k in range(3):  # centrals, laterals, canines on both sides
            mid = side * (TOOTH_EDGES[k] + TOOTH_EDGES[k + 1]) / 2
            r, c_mid = texel(synthetic, mid, 0.035)
            _, c_gap = texel(synthetic, side * TOOTH_EDGES[k + 1], 0.035)
            assert gray[r, c_mid] > 1.1 * gray[r, c_gap], (side, k)
        # near the centrals' tips the gap between them lets the mouth's dark show through
        r, c_mid = texel(synthetic, side * 0.0625, 0.075)
        _, c_gap = texel(synthetic, side * TOOTH_EDGES[1], 0.075)
        assert alpha[r, c_mid] == 255 and alpha[r, c_gap - 1 : c_gap + 2].min() < 0.6 * 255


def teeth_row(pack: AvatarPack, frame: npt.NDArray[np.uint8], below: float) -> F32:
    """Frame luma along the lips' seam, `below` mouth widths under it, across the middle 40% of the mouth."""
    lm = pack.landmarks[:, :2].astype(np.float64)
    centre = (lm[61] + lm[291]) / 2
    eu = lm[291] - lm[61]
    mw = float(np.linalg.norm(eu))
    eu /= mw
    ev = np.array([-eu[1], eu[0]])
    seam = lm[list(UPPER_INNER)] - centre
    su, sv = seam @ eu / mw, seam @ ev / mw
    order = np.argsort(su)
    u = np.linspace(-0.2, 0.2, 200)
    v = np.interp(u, su[order], sv[order]) + below
    p = (centre + (u[:, None] * eu + v[:, None] * ev) * mw).astype(np.float32)
    return np.asarray(cv2.remap(luma(frame), p[:, 0:1], p[:, 1:2], cv2.INTER_LINEAR)[:, 0], np.float32)


def test_open_mouth_shows_tooth_structure(synthetic: AvatarPack) -> None:
    """Across the visible teeth the frame varies tooth by tooth (a smooth band measured 1.3 grey levels)."""
    m = np.zeros(len(MOUTH_BASES), np.float32)
    m[MOUTH_BASES.index("jaw_open")] = 0.7
    frame = Renderer(synthetic).render(FaceState(mouth=m))
    row = teeth_row(synthetic, frame, 0.045)
    detail = row - cv2.blur(row[None], (25, 1))[0]
    assert float(detail[12:-12].std()) > 4.0


def test_closed_lid_is_domed(pack: AvatarPack) -> None:
    """The closed-lid patch is brightest high on the eyeball and darker toward the lash line it turns under."""
    for eye in pack.eyes:
        gray = luma(eye.lid)
        h, w = gray.shape
        t = (np.arange(h)[:, None] - eye.upper[None, :]) / np.maximum(eye.closed - eye.upper, 1.0)[None, :]
        middle = np.abs(np.linspace(-1, 1, w))[None, :].repeat(h, 0) < 0.4
        upper = gray[(t > 0.2) & (t < 0.45) & middle].mean()
        lower = gray[(t > 0.75) & (t < 1.0) & middle].mean()
        assert upper > 1.1 * lower  # inpainted flat skin measured 1.02 on the astronaut


def test_blink_draws_the_domed_lid(pack: AvatarPack) -> None:
    """A full blink shows the lid patch's shading: the frame's lid is darker low than high too."""
    frame = Renderer(pack).render(FaceState(blink=1.0))
    gray = luma(frame)
    for eye in pack.eyes:
        h, w = eye.lid.shape[:2]
        patch = gray[eye.y : eye.y + h, eye.x : eye.x + w]
        t = (np.arange(h)[:, None] - eye.upper[None, :]) / np.maximum(eye.closed - eye.upper, 1.0)[None, :]
        middle = np.abs(np.linspace(-1, 1, w))[None, :].repeat(h, 0) < 0.4
        assert patch[(t > 0.2) & (t < 0.45) & middle].mean() > 1.1 * patch[(t > 0.75) & (t < 1.0) & middle].mean()
