"""Voice from a real browser: Chromium's fake microphone plays a WAV of recorded speech into the demo page."""

from __future__ import annotations

import asyncio
import re
import wave
from pathlib import Path

import numpy as np

from conftest import TIMEOUT_MS, Deployment, chromium, piper_speech, same_words

BACKENDS = ("sqlite",)
QUESTION = "Could you tell me where the train station is?"


def speech_wav(path: Path, text: str) -> Path:
    """Recorded speech (packaged Piper voice) with silence around it, as a 16-bit WAV. Blocking."""
    samples, rate = piper_speech(text)
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
    async with chromium([f"--use-file-for-fake-audio-capture={wav}"]) as browser:
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
