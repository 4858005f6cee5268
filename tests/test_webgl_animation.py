"""The browser's animation stream decoder (web/animation.js) in Chromium: the shared test vectors, the timeline
(interpolation, CUT, 32-bit wrap) and the client renderer's module graph loading without errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from conftest import chromium
from servers import serve_folder

WEB = Path(__file__).resolve().parents[1] / "src" / "liveavatar" / "web"
VECTORS = json.loads((Path(__file__).parent / "vectors" / "animation.json").read_text())


@pytest.fixture(scope="module")
async def js() -> AsyncIterator[Page]:
    """A page of the web folder's origin with animation.js imported as window.anim."""
    with serve_folder(WEB) as url:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{url}/style.css")
            await page.evaluate("async () => { window.anim = await import('/animation.js'); }")
            yield page


async def run(page: Page, body: str, arg: Any = None) -> Any:
    """Evaluate `body` (a function body using `a` = animation.js and `arg`)."""
    return await page.evaluate(f"(arg) => {{ const a = window.anim; {body} }}", arg)


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return abs(float(a) - float(b)) <= 1e-6


async def test_decoder_passes_the_shared_vectors(js: Page) -> None:
    assert VECTORS["max_turn"] == 10.0 and VECTORS["max_roll"] == 4.5 and VECTORS["max_shift"] == 6.0
    limits = await run(js, "return a.LIMITS;")
    assert limits == {"maxTurn": 10.0, "maxRoll": 4.5, "maxShift": 6.0}
    for vector in VECTORS["vectors"]:
        decoded = await run(
            js,
            "const b = new Uint8Array(arg.match(/../g)?.map((h) => parseInt(h, 16)) || []); return a.decode(b);",
            vector["hex"],
        )
        kind = vector["type"]
        assert decoded["type"] == kind.lower(), vector["name"]
        if kind == "HELLO":
            assert (decoded["fps"], decoded["width"], decoded["height"], decoded["rtpBase"]) == (
                vector["fps"],
                vector["width"],
                vector["height"],
                vector["rtp_base"],
            )
            assert decoded["info"] == vector["info"]
            again = await run(
                js, "return Array.from(a.encodeHello(arg), (x) => x.toString(16).padStart(2, '0')).join('');", decoded
            )
            assert again == vector["hex"], vector["name"]
        elif kind == "FRAMES":
            assert decoded["fps"] == vector["fps"] and decoded["firstPosition"] == vector["first_position"]
            assert close(decoded["states"], vector["decoded"]), vector["name"]
            encoded = await run(
                js,
                "const b = a.encodeFrames(arg.first, arg.input, arg.fps);"
                "return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');",
                {"first": vector["first_position"], "input": vector["input"], "fps": vector["fps"]},
            )
            assert encoded == vector["hex"], vector["name"]
        else:
            assert decoded["position"] == vector["position"]
    for bad in VECTORS["malformed"]:
        error = await run(
            js,
            """const b = new Uint8Array(arg.match(/../g)?.map((h) => parseInt(h, 16)) || []);
               try { a.decode(b); return null; } catch (e) { return e.name; }""",
            bad["hex"],
        )
        assert error == "AnimationError", bad["name"]


async def test_timeline_interpolates_cuts_and_unwraps(js: Page) -> None:
    result = await run(
        js,
        """const t = new a.Timeline();
        const s = (jaw) => ({mouth: [jaw, 0, 0, 0, 0], blink: 0, yaw: 0, pitch: 0, roll: 0, dx: 0, dy: 0,
                             brows: 0, smile: 0});
        t.add({fps: 25, firstPosition: 1920 * 10, states: [s(0), s(1), s(0.5)]});
        const mid = t.stateAt(1920 * 10 + 960).mouth[0];
        const on = t.stateAt(1920 * 11).mouth[0];
        const before = t.stateAt(0);
        t.cut(1920 * 11);
        const cut = t.stateAt(1920 * 11 + 960);
        t.add({fps: 25, firstPosition: 1920 * 11, states: [s(0.2)]});
        const fresh = t.stateAt(1920 * 11).mouth[0];
        const w = new a.Timeline();
        const top = 2 ** 32 - 1920;
        w.add({fps: 25, firstPosition: top, states: [s(0.1)]});
        w.add({fps: 25, firstPosition: 0, states: [s(0.3)]});
        const across = w.stateAt(w.unwrap(0) - 960).mouth[0];
        return {mid, on, before, cut, fresh, unwrapped: w.unwrap(0), across};""",
    )
    assert abs(result["mid"] - 0.5) < 1e-9 and result["on"] == 1
    assert result["before"] is None
    assert result["cut"] is None  # frames 11 and later are void (the player holds what it drew last)
    assert abs(result["fresh"] - 0.2) < 1e-9
    assert result["unwrapped"] == 2**32 and abs(result["across"] - 0.2) < 1e-9


async def test_client_render_modules_load(js: Page) -> None:
    names = await run(
        js,
        """return Promise.all([import('/client-render.js'), import('/webgl-renderer.js'), import('/liveavatar.js')])
            .then(([c, w, l]) => [typeof c.ClientRender, w.webgl2Supported(), typeof l.clientRenderSupported]);""",
    )
    assert names == ["function", True, "function"]
