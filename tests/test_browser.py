"""The demo page in a real browser (Debian Chromium via Playwright) against a real server on loopback.

Joins a session over WebRTC from `web/liveavatar.js`, checks that the avatar's video plays, that a
set-params command is acknowledged, that the bot's answer streams into the chat panel, and keeps a
screenshot in test-artifacts/ (copied to docs/images/demo.png with LIVEAVATAR_UPDATE_DOCS_IMAGES=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from conftest import Deployment

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "browser-demo.png"
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "demo.png"

BACKENDS = ("sqlite",)  # the page does not depend on storage
SAID = "Hello from the browser test. The avatar repeats what it is told!"


async def _status(deployment: Deployment, session_id: str) -> int:
    """The session's status from the REST API (1 queueing, 2 live, 3 closed, 4 failed)."""
    detail = await asyncio.to_thread(deployment.alice.session, session_id)
    assert detail["code"] == 1000, detail
    return int(detail["data"]["status"])


async def _sent_audio_packets(page: Page) -> int:
    """RTP packets the page's peer connection has sent on its audio track so far."""
    return int(
        await page.evaluate(
            """async () => {
                let sent = 0;
                (await window.__liveavatar.session.pc.getStats()).forEach((s) => {
                    if (s.type === 'outbound-rtp' && s.kind === 'audio') sent += s.packetsSent || 0;
                });
                return sent;
            }"""
        )
    )


async def _received_audio(page: Page) -> dict[str, float]:
    """What the page's peer connection decoded of the avatar's audio so far (inbound-rtp stats)."""
    return dict(
        await page.evaluate(
            """async () => {
                const found = {energy: 0, samples: 0, concealed: 0, channels: 0};
                const report = await window.__liveavatar.session.pc.getStats();
                report.forEach((s) => {
                    if (s.type !== 'inbound-rtp' || s.kind !== 'audio') return;
                    found.energy = s.totalAudioEnergy || 0;
                    found.samples = s.totalSamplesReceived || 0;
                    found.concealed = s.concealedSamples || 0;
                    const codec = report.get(s.codecId);
                    found.channels = codec ? codec.channels || 0 : 0;
                });
                return found;
            }"""
        )
    )


async def _received_video(page: Page) -> dict[str, int]:
    """What the page's peer connection decoded of the avatar's video so far (inbound-rtp stats)."""
    return dict(
        await page.evaluate(
            """async () => {
                const found = {decoded: 0, firs: 0, plis: 0, dropped: 0};
                (await window.__liveavatar.session.pc.getStats()).forEach((s) => {
                    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
                    found.decoded = s.framesDecoded || 0;
                    found.firs = s.firCount || 0;
                    found.plis = s.pliCount || 0;
                    found.dropped = s.framesDropped || 0;
                });
                return found;
            }"""
        )
    )


async def _debug(page: Page, expression: str) -> Any:
    """Evaluate `expression` against the page's `window.__liveavatar` debug hook (as `d`)."""
    return await page.evaluate(f"(() => {{ const d = window.__liveavatar; return {expression}; }})()")


async def test_chunking_fits_every_transport_limit(page: Page, deployment: Deployment) -> None:
    await page.goto(deployment.server.url)
    text = 'Grüße, 世界! "quoted" \\ back\nslash 🙂🚀 ' * 120
    for limit in (1024, 15 * 1024):
        chunks: list[str] = await page.evaluate(
            "([text, limit]) => window.__liveavatar.lib.splitChat('m1', text, limit)", [text, limit]
        )
        messages = [json.loads(chunk) for chunk in chunks]
        assert len(chunks) > 1 if limit == 1024 else len(chunks) == 1
        sizes = [len(chunk.encode("utf-8")) for chunk in chunks]
        assert max(sizes) <= limit
        assert min(sizes[:-1], default=limit) > limit - 8  # filled greedily (a character is at most 6 bytes)
        assert [m["idx"] for m in messages] == list(range(len(messages)))
        assert [m["fin"] for m in messages] == [False] * (len(messages) - 1) + [True]
        assert {(m["v"], m["type"], m["mid"]) for m in messages} == {(2, "chat", "m1")}
        assert "".join(m["pld"]["text"] for m in messages) == text


async def test_demo_page_goes_live_and_talks(page: Page, deployment: Deployment) -> None:
    await page.goto(f"{deployment.server.url}/?aec=0")  # no echo cancellation etc. on the fake microphone

    # A wrong key shows the envelope's msg.
    await page.fill("#api-key", "la_not-a-real-key")
    await page.click("#key-apply")
    await page.wait_for_selector("#error:not([hidden])")
    assert "invalid authorization" in await page.inner_text("#error-text")

    # The right key fills the pickers from the REST API and is remembered.
    await page.fill("#api-key", deployment.alice.key or "")
    await page.click("#key-apply")
    await page.wait_for_selector('.avatar-option[data-avatar-id="astronaut"][aria-checked="true"]')
    assert await page.is_hidden("#error")
    assert await page.locator("#voice option").count() > 1
    assert await page.locator("#language option").count() > 1
    assert await page.evaluate("localStorage.getItem('liveavatar.apiKey')") == deployment.alice.key

    # Start: the video plays (frames decoded, time advancing) with the avatar's audio beside it.
    await page.click("#start")
    await page.wait_for_selector('#stage[data-state="live"]')
    await page.wait_for_function("document.getElementById('video').currentTime > 0")
    before = await page.evaluate("document.getElementById('video').currentTime")
    await page.wait_for_function(f"document.getElementById('video').currentTime > {before} + 0.5")
    video = await page.evaluate(
        """(() => { const v = document.getElementById('video');
        return {w: v.videoWidth, h: v.videoHeight, paused: v.paused,
                kinds: v.srcObject.getTracks().map((t) => t.kind).sort()}; })()"""
    )
    assert video == {"w": 512, "h": 512, "paused": False, "kinds": ["audio", "video"]}
    # idle, about two frames in three repeat the one before (transport/vp8_repeat.py): Chromium decodes
    # every one of them, asks for no keyframe (a bitrate change may still send one) and drops none
    start = await _received_video(page)
    await asyncio.sleep(2.0)
    idle = await _received_video(page)
    assert idle["decoded"] - start["decoded"] >= 40, (start, idle)  # 25 fps
    assert idle["firs"] == start["firs"] and idle["plis"] == start["plis"], (start, idle)
    assert idle["dropped"] == start["dropped"], (start, idle)
    box = await page.locator("#video").bounding_box()
    assert box is not None and box["width"] == box["height"] >= 400, box  # shown large, square
    session_id = await page.inner_text("#info-session")
    assert await _status(deployment, session_id) == 2
    first_frame_ms = await _debug(page, "d.firstFrameMs")
    assert isinstance(first_frame_ms, int | float) and first_frame_ms > 0  # kept in browser-timings.json

    # A setting changed while live goes out as set-params and comes back acknowledged.
    english = await page.evaluate(
        "[...document.querySelectorAll('#language option')].map((o) => o.value).find((v) => /^en/.test(v))"
    )
    await page.select_option("#language", english)
    await page.wait_for_function("window.__liveavatar.acks.some((a) => a.cmd === 'set-params')")
    acks = await _debug(page, "d.acks")
    assert [(a["cmd"], a["code"]) for a in acks] == [("set-params", 1000)]
    await page.wait_for_selector("#chat-log .msg.system.ok:has-text('applied')")
    failure = await page.evaluate(
        "window.__liveavatar.session.setParams({mode: 7}).then(() => null, (e) => ({code: e.code, msg: e.msg}))"
    )
    assert failure is not None and failure["code"] == 1003 and "mode" in failure["msg"], failure

    # Chat: in retelling mode the bot's answer is the text itself, streamed into the chat panel.
    await page.fill("#chat-input", SAID)
    await page.press("#chat-input", "Enter")
    assert await page.input_value("#chat-input") == ""
    await page.wait_for_selector(f"#chat-log .msg.user:has-text({json.dumps(SAID)})")
    await page.wait_for_function(
        """(said) => [...document.querySelectorAll('#chat-log .msg.bot:not(.streaming)')]
            .some((m) => m.textContent.replace(/\\s+/g, ' ').trim() === said)""",
        arg=SAID,
    )
    await page.wait_for_function(
        "window.__liveavatar.messages.some((m) => m.type === 'event' && m.pld.event === 'audio_start')"
    )
    # The voice is decoded and played with sound: the server sends mono Opus packets on opus/48000/2.
    for _ in range(100):
        heard = await _received_audio(page)
        if heard["energy"] > 1e-3:
            break
        await asyncio.sleep(0.1)
    assert heard["energy"] > 1e-3 and heard["samples"] > 0, heard
    assert heard["concealed"] < heard["samples"] / 2, heard  # decoded, not made up by loss concealment

    # Live stats fill in (refreshed every second).
    await page.wait_for_function(
        """() => /^[1-9]\\d*$/.test(document.getElementById('stat-fps').textContent)
            && /bps$/.test(document.getElementById('stat-bitrate').textContent)"""
    )
    stats = {name: await page.inner_text(f"#stat-{name}") for name in ("rtt", "fps", "bitrate", "loss")}
    assert re.fullmatch(r"<?[\d.]+ ms", stats["rtt"]), stats
    assert re.fullmatch(r"[\d.]+ (kbps|Mbps)", stats["bitrate"]), stats
    assert re.fullmatch(r"[\d.]+%", stats["loss"]), stats

    assert await page.locator("#video").bounding_box() == box  # still shown, in place
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))
    if os.environ.get("LIVEAVATAR_UPDATE_DOCS_IMAGES") == "1":  # the README's picture changes only on request
        shutil.copyfile(SCREENSHOT, DOCS_SCREENSHOT)
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps({"offer_to_first_frame_ms": first_frame_ms}))

    # The microphone goes out through the slot the page reserved at join (no renegotiation).
    await page.click("#mic")
    await page.wait_for_selector('#mic[aria-pressed="true"]')
    for _ in range(100):
        if await _sent_audio_packets(page) > 0:
            break
        await asyncio.sleep(0.1)
    assert await _sent_audio_packets(page) > 0
    await page.click("#mic")
    await page.wait_for_selector('#mic[aria-pressed="false"]')
    assert await _debug(page, "d.session.microphoneEnabled") is False

    # Interrupt is acknowledged too.
    await page.click("#interrupt")
    await page.wait_for_function("window.__liveavatar.acks.some((a) => a.cmd === 'interrupt' && a.code === 1000)")

    # Stop leaves the session (closed on the server) and returns to the ready state.
    await page.click("#stop")
    await page.wait_for_selector('#stage[data-state="ready"]')
    assert await page.is_enabled("#start")
    assert await _debug(page, "d.session.state") == "closed"
    for _ in range(100):  # the page closes the session over REST right after leaving
        if await _status(deployment, session_id) == 3:
            break
        await asyncio.sleep(0.1)
    assert await _status(deployment, session_id) == 3
