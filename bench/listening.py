"""Listening bench: end of the user's voice -> transcript, with and without partial passes, in one process.

    .venv/bin/python bench/listening.py [--rounds N] [--silence-ms MS]

The server's own listener (Silero VAD, turn detector, partial passes, Whisper tiny.en) hears six questions
and one long turn (the packaged Piper voice, as bench/voice.py speaks them) pushed as 48 kHz 20 ms frames in
real time, followed by silence. Each is heard twice in a row, once by a listener whose partial passes are off
(the whole utterance transcribed when the turn ends) and once with them on, so both meet the same load. Per
turn: voice end (the last loud sample pushed) -> transcript; turn end -> transcript (the STT time left after
the silence); passes made; whether the turn's transcript was a pass made before the turn ended.
Prints numbers, asserts nothing, writes bench/results/listening.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from common import BENCH_DIR, machine_info, run_bench, spread
from liveavatar.session.listening import Ears, Listener
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.resample import resample
from liveavatar.speech.stt import WhisperSTT
from liveavatar.speech.turns import TurnSettings
from liveavatar.speech.vad import SileroVAD
from voice import UTTERANCES

RATE = 48000
FRAME = 960
THRESHOLD = 500
"""A sample louder than this is voice (as bench/voice_client.py decides the speech's end)."""
LEAD_S = 0.5
TRAIL_S = 1.5
LONG = (
    "Sorry to interrupt, what time is it? I wanted to ask about the weather tomorrow and whether it will rain "
    "in the afternoon, because we are planning a picnic by the lake with the children."
)
"""A long turn (~8 s): partial passes run while it goes on, and their agreed words are forced as a prefix."""
TEXTS = (*UTTERANCES, LONG)
Reply = dict[str, Any]


class LoopClock:
    """Session time on the event loop's clock, from the first call."""

    def __init__(self) -> None:
        self._origin = asyncio.get_running_loop().time()

    def now(self) -> float:
        """Seconds since the clock was made."""
        return asyncio.get_running_loop().time() - self._origin

    def start(self) -> float:
        """The origin (the clock runs from its creation)."""
        return self._origin


async def speech_for(texts: tuple[str, ...]) -> dict[str, npt.NDArray[np.int16]]:
    """48 kHz speech for each text, made with the packaged Piper voice."""
    from liveavatar.speech.voices import VoiceRegistry, discover_voices

    voices = VoiceRegistry(discover_voices())
    voice = voices.default_voice("en")
    tts = voices.tts_for(voice)
    made = {}
    for text in texts:
        chunks = [chunk async for chunk in tts.synthesize(text, voice)]
        made[text] = resample(np.concatenate([c.audio for c in chunks]), chunks[0].sample_rate, RATE)
    return made


async def hear(ears: Ears, speech: npt.NDArray[np.int16], silence_ms: int, partial: bool) -> Reply:
    """One listener hears one utterance in real time; when and what it transcribed."""
    loop = asyncio.get_running_loop()
    settings = SessionSettings(avatar_id="bench", turn=TurnSettings(silence_duration_ms=silence_ms))
    stages: dict[str, float] = {}
    heard: list[tuple[float, str]] = []
    done = asyncio.Event()

    async def on_speech(_t: float) -> None:
        pass  # nothing to interrupt

    async def on_utterance(text: str) -> None:
        heard.append((loop.time(), text))
        done.set()

    listener = Listener(
        ears,
        LoopClock(),
        lambda: settings,
        on_speech=on_speech,
        on_utterance=on_utterance,
        timing=lambda stage, seconds: stages.__setitem__(stage, seconds),
    )
    if not partial:
        listener.partials.pause_s = listener.partials.long_s = math.inf
    lead, trail = np.zeros(round(LEAD_S * RATE), np.int16), np.zeros(round(TRAIL_S * RATE), np.int16)
    audio = np.concatenate((lead, speech, trail))
    audio = np.concatenate((audio, np.zeros(-len(audio) % FRAME, np.int16)))
    last_loud = int(np.flatnonzero(np.abs(speech.astype(np.int32)) > THRESHOLD)[-1]) + round(LEAD_S * RATE)
    task = asyncio.create_task(listener.run())
    voice_end = math.nan
    try:
        start = loop.time()
        for i in range(0, len(audio), FRAME):
            await asyncio.sleep(max(0.0, start + i / RATE - loop.time()))
            frame = av.AudioFrame.from_ndarray(audio[i : i + FRAME].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            listener.push(frame)
            if i <= last_loud < i + FRAME:
                voice_end = loop.time() + (last_loud - i) / RATE
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {
        "partial": partial,
        "voice_end_to_transcript_ms": 1000 * (heard[0][0] - voice_end) if heard else None,
        "turn_end_to_transcript_ms": 1000 * stages["speech_end_to_transcript"] if heard else None,
        "vad_voice_end_to_turn_end_ms": 1000 * stages.get("voice_end_to_turn_end", math.nan),
        "passes": listener.partials.passes,
        "reused": listener.partials.reused,
        "text": heard[0][1] if heard else None,
    }


async def run(rounds: int, silence_ms: int) -> Reply:
    """Every utterance, `rounds` times, heard without and with partial passes."""
    started = time.monotonic()
    load_start = os.getloadavg()
    ears = Ears(SileroVAD(), WhisperSTT())
    ears.load()
    speech = await speech_for(TEXTS)
    turns: list[Reply] = []
    for round_ in range(rounds):
        for text in TEXTS:
            for partial in (False, True) if round_ % 2 == 0 else (True, False):
                turn = await hear(ears, speech[text], silence_ms, partial)
                turns.append({**turn, "said": text, "load": os.getloadavg()[0]})
                print(
                    f"{'partial' if partial else 'whole  '} {turn['voice_end_to_transcript_ms'] or math.nan:6.0f} ms "
                    f"(after turn end {turn['turn_end_to_transcript_ms'] or math.nan:5.0f} ms, passes "
                    f"{turn['passes']}, reused {turn['reused']}) {turn['text']!r}",
                    flush=True,
                )
    result: Reply = {"machine": machine_info(), "load_average_start": load_start, "silence_ms": silence_ms}
    for partial, name in ((False, "whole"), (True, "partial")):
        mine = [t for t in turns if t["partial"] == partial]
        result[name] = {
            key: spread([t[key] for t in mine if t[key] is not None])
            for key in ("voice_end_to_transcript_ms", "turn_end_to_transcript_ms", "vad_voice_end_to_turn_end_ms")
        }
        result[name]["reused"] = sum(t["reused"] for t in mine)
        result[name]["passes"] = sum(t["passes"] for t in mine)
        result[name]["exact"] = sum(
            1 for t in mine if t["text"] and t["text"].strip(" .?!").lower() == t["said"].strip(" .?!").lower()
        )
        result[name]["turns"] = len(mine)
    result["raw"] = turns
    result["wall_seconds"] = time.monotonic() - started
    return result


def format_summary(results: Reply) -> str:
    """The final block."""
    machine = results["machine"]
    lines = [
        "=" * 110,
        f"liveavatar listening bench (server_vad {results['silence_ms']} ms silence, Whisper tiny.en, Piper voice joe)",
        f"machine  {machine['cores']} cores; load average at start {results['load_average_start'][0]:.2f}, "
        f"end {machine['load_average'][0]:.2f}",
    ]
    for name in ("whole", "partial"):
        r = results[name]
        end, after, vad = (
            r["voice_end_to_transcript_ms"],
            r["turn_end_to_transcript_ms"],
            r["vad_voice_end_to_turn_end_ms"],
        )
        lines.append(
            f"{name:<8} voice end -> transcript median {end['median']:.0f} ms (p95 {end['p95']:.0f}); turn end -> "
            f"transcript median {after['median']:.0f} ms (p95 {after['p95']:.0f}); VAD voice end -> turn end "
            f"{vad['median']:.0f} ms; {r['passes']} passes for {r['turns']} turns, {r['reused']} reused; "
            f"{r['exact']}/{r['turns']} transcripts exact"
        )
    lines += [f"wall time {results['wall_seconds']:.0f} s", "=" * 110]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each utterance is heard per variant [2]")
    parser.add_argument("--silence-ms", type=int, default=500, help="server_vad silence_duration_ms [500]")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "listening.json")
    args = parser.parse_args(argv)
    return run_bench(run(max(1, args.rounds), args.silence_ms), args.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
