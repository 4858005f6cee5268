"""Voice from a real browser: Chromium's fake microphone plays a WAV of recorded speech into the demo page."""

from __future__ import annotations

import asyncio
import re
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import async_playwright

from conftest import Deployment, same_words
from liveavatar.speech.voices import VoiceRegistry, discover_voices
from servers import Server
from test_browser import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS

QUESTION = "Could you tell me where the train station is?"


@pytest.fixture(scope="module")
def backend() -> str:
    """SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server for the page."""
    return Deployment(make_server().start())


def speech_wav(path: Path, text: str) -> Path:
    """Recorded speech (packaged Piper voice) with a second of silence around it, as a 16-bit WAV."""
    voices = VoiceRegistry(discover_voices())
    voice = voices.default_voice("en")

    async def collect() -> tuple[np.ndarray, int]:
        chunks = [c async for c in voices.tts_for(voice).synthesize(text, voice)]
        return np.concatenate([c.audio for c in chunks]), chunks[0].sample_rate

    samples, rate = asyncio.run(collect())
    # Chromium loops the file: long silence after the question gives the server time to answer.
    silence = np.zeros(rate * 8, dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate([silence[: rate * 2], samples, silence]).tobytes())
    return path


async def test_browser_microphone_is_heard_and_answered(deployment: Deployment, tmp_path: Path) -> None:
    wav = await asyncio.to_thread(speech_wav, tmp_path / "question.wav", QUESTION)
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        try:
            page = await browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"{deployment.server.url}/?mic=1&aec=0")
            await page.fill("#api-key", deployment.alice.key or "")
            await page.click("#key-apply")
            await page.wait_for_selector('.avatar-option[data-avatar-id="astronaut"][aria-checked="true"]')
            await page.click("#start")
            await page.wait_for_selector('#stage[data-state="live"]')
            user = page.locator("#chat-log .msg.user").first
            await user.wait_for(timeout=40_000)
            heard = re.findall(r"[a-z']+", (await user.inner_text()).lower())
            assert same_words(heard, re.findall(r"[a-z']+", QUESTION.lower())), heard
            # Retelling: the avatar says back what it heard.
            await page.wait_for_selector("#chat-log .msg.bot:not(.streaming)", timeout=40_000)
            bot = await page.locator("#chat-log .msg.bot").first.inner_text()
            assert "train station" in bot.lower()
        finally:
            await browser.close()
