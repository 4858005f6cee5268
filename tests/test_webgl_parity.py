"""The browser's WebGL2 renderer (web/webgl-renderer.js) against the Python renderer, in headless Chromium.

Chromium draws the avatar's web pack with software GL (SwiftShader) for a fixed set of FaceStates; each
canvas is read back and compared with `Renderer.render` for the same state: the mean absolute difference
over the frame and over the face, and the structural similarity (SSIM, 11x11 Gaussian window, sigma 1.5,
on luma) over the face, each against the thresholds below. The face warp (head motion, parallax, mouth and
brow fields, lids) is the same maths; the mouth interior's blurred masks are approximated (see the module
docstring of webgl-renderer.js), so states with the mouth open get the looser MOUTH_* thresholds.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from playwright.async_api import Page

from conftest import chromium
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.background import Background
from liveavatar.render.builder import build_pack
from liveavatar.render.face import MOUTH_BASES, FaceState
from liveavatar.render.pack import AvatarPack
from liveavatar.render.renderer import Renderer
from liveavatar.render.webpack import build_web_pack
from servers import serve_folder

WEB = Path(__file__).resolve().parents[1] / "src" / "liveavatar" / "web"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "webgl"

FRAME_MAD = 0.1
"""Mean absolute difference over the whole frame (0..255 per channel), any state."""
FACE_MAD = 0.25
"""Mean absolute difference over the face box, states with the lips closed."""
FACE_SSIM = 0.995
"""SSIM over the face box, states with the lips closed."""
MOUTH_MAD = 0.8
"""Mean absolute difference over the face box, states with the mouth open (interior approximated)."""
MOUTH_SSIM = 0.99
"""SSIM over the face box, states with the mouth open."""


def mouth(**weights: float) -> list[float]:
    m = [0.0] * len(MOUTH_BASES)
    for k, v in weights.items():
        m[MOUTH_BASES.index(k)] = v
    return m


STATES: dict[str, dict[str, Any]] = {
    "rest": {},
    "closed": {"mouth": mouth(lips_closed=1.0)},
    "tuck": {"mouth": mouth(lower_lip_tuck=1.0)},
    "blink_half": {"blink": 0.5},
    "blink": {"blink": 1.0},
    "yaw": {"yaw": 8.0},
    "yaw_left": {"yaw": -10.0},
    "pitch": {"pitch": 7.0},
    "roll": {"roll": 4.0},
    "shift": {"dx": 4.5, "dy": -3.0},
    "brows_up": {"brows": 1.0},
    "brows_down": {"brows": -0.8},
    "smile": {"smile": 0.8},
    "frown": {"smile": -0.7},
    "jaw_open": {"mouth": mouth(jaw_open=1.0)},
    "jaw_half": {"mouth": mouth(jaw_open=0.45)},
    "wide": {"mouth": mouth(lips_wide=1.0, jaw_open=0.3)},
    "round": {"mouth": mouth(lips_round=1.0, jaw_open=0.4)},
    "mix": {
        "mouth": mouth(jaw_open=0.6, lips_wide=0.3, lips_round=0.2),
        "blink": 0.3,
        "yaw": -5.0,
        "pitch": 3.0,
        "roll": -2.5,
        "dx": -2.0,
        "dy": 1.5,
        "brows": 0.5,
        "smile": 0.4,
    },
}


@pytest.fixture(scope="module", params=["astronaut", "grace_hopper"])
def pack(request: pytest.FixtureRequest) -> AvatarPack:
    name, gender, path = builtin_portraits()[request.param]
    return build_pack(cv2.imread(str(path)), avatar_id=request.param, name=name, gender=gender)


@pytest.fixture(scope="module")
def site(pack: AvatarPack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The renderer module, a page and the web pack, served on loopback."""
    root = tmp_path_factory.mktemp("site")
    shutil.copy(WEB / "webgl-renderer.js", root / "webgl-renderer.js")
    (root / "avatar.lawp").write_bytes(build_web_pack(pack))
    (root / "index.html").write_text(
        """<!doctype html><canvas id="c"></canvas><script type="module">
        import * as r from "./webgl-renderer.js";
        window.webgl = r;
        window.ready = (async () => {
          const pack = await r.loadWebPack("./avatar.lawp");
          window.renderer = new r.WebGLRenderer(document.getElementById("c"), pack);
          return true;
        })();
        </script>"""
    )
    with serve_folder(root) as url:
        yield url


@pytest.fixture(scope="module")
async def gl_page(site: str) -> AsyncIterator[Page]:
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{site}/index.html")
        assert await page.evaluate("window.ready") is True
        yield page
        assert not errors, errors


async def draw(page: Page, state: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """The canvas after rendering `state`, as H x W x 3 BGR."""
    return np.ascontiguousarray((await draw_rgba(page, state))[..., 2::-1])


async def draw_rgba(page: Page, state: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """The canvas after rendering `state`, as H x W x 4 RGBA."""
    data = await page.evaluate(
        """(state) => {
            const r = window.renderer;
            r.render(state);
            const px = r.readPixels();
            let s = "";
            for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode(...px.subarray(i, i + 0x8000));
            return [r.w, r.h, btoa(s), r.gl.getError()];
        }""",
        state,
    )
    w, h, b64, error = data
    assert error == 0, f"WebGL error {error:#x}"
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)


def ssim(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Mean SSIM of two BGR images on luma (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(cv2.GaussianBlur(v, (11, 11), 1.5), np.float64)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def face_box(pack: AvatarPack) -> tuple[slice, slice]:
    """The face (landmark box grown by 12 px): where a FaceState changes the picture."""
    lm = pack.landmarks[:, :2]
    x0, y0 = np.floor(lm.min(0)).astype(int) - 12
    x1, y1 = np.ceil(lm.max(0)).astype(int) + 12
    return slice(max(int(y0), 0), int(y1)), slice(max(int(x0), 0), int(x1))


def mad(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def test_web_pack_renders_like_the_python_renderer(gl_page: Page, pack: AvatarPack) -> None:
    renderer = Renderer(pack)
    box = face_box(pack)
    out = ARTIFACTS / pack.avatar_id
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    rest = renderer.render(FaceState()).copy()
    for name, fields in STATES.items():
        state = {"mouth": mouth(), **fields}
        expected = renderer.render(FaceState(**{**state, "mouth": np.array(state["mouth"], np.float32)})).copy()
        got = await draw(gl_page, state)
        assert name == "rest" or mad(expected[box], rest[box]) > 0.2, f"{name} does not change the picture"
        cv2.imwrite(str(out / f"{name}.png"), np.hstack([expected[box], got[box]]))
        results[name] = (mad(got, expected), mad(got[box], expected[box]), ssim(got[box], expected[box]))
    report = "\n".join(
        f"{n:12s} frame MAD {f:.4f}  face MAD {m:.4f}  face SSIM {s:.5f}" for n, (f, m, s) in results.items()
    )
    print(report)
    (out / "parity.txt").write_text(report + "\n")
    for name, (frame_mad, face_mad, face_ssim) in results.items():
        open_mouth = any(v > 0.2 for v in STATES[name].get("mouth", [])[:3])
        mad_limit, ssim_limit = (MOUTH_MAD, MOUTH_SSIM) if open_mouth else (FACE_MAD, FACE_SSIM)
        assert frame_mad <= FRAME_MAD, (name, frame_mad)
        assert face_mad <= mad_limit, (name, face_mad)
        assert face_ssim >= ssim_limit, (name, face_ssim)


async def test_transparent_canvas_over_an_image_matches_an_image_background(gl_page: Page, pack: AvatarPack) -> None:
    """With background null the canvas is the person alone (premultiplied alpha), for an image or video behind it."""
    rng = np.random.default_rng(7)
    backdrop = cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), pack.size, interpolation=cv2.INTER_CUBIC)
    renderer = Renderer(pack, Background(image=backdrop))
    box = face_box(pack)
    await gl_page.evaluate("window.renderer.setBackground(null)")
    try:
        for name in ("rest", "yaw", "jaw_open", "mix"):
            state = {"mouth": mouth(), **STATES[name]}
            expected = renderer.render(FaceState(**{**state, "mouth": np.array(state["mouth"], np.float32)})).copy()
            rgba = (await draw_rgba(gl_page, state)).astype(np.float64)
            over = rgba[..., 2::-1] + backdrop.astype(np.float64) * (1 - rgba[..., 3:] / 255)
            got = np.clip(over + 0.5, 0, 255).astype(np.uint8)
            frame_mad, face_mad = mad(got, expected), mad(got[box], expected[box])
            print(f"{name:12s} over an image: frame MAD {frame_mad:.4f}  face MAD {face_mad:.4f}")
            assert frame_mad <= FRAME_MAD and face_mad <= MOUTH_MAD, (name, frame_mad, face_mad)
    finally:
        await gl_page.evaluate("window.renderer.setBackground('#5b6b7c')")
