"""Outbound audio path: CPU per 20 ms frame from the track's recv() to the RTP payloads, aiortc's way vs ours.

    .venv/bin/python bench/audio.py [--frames N] [--runs R]

Both paths run through a real aiortc RTCRtpSender (`_next_encoded_frame`, what its RTP loop calls per
frame) on an unpaced clock, in this process, no network:
- `aiortc`: a track handing out 48 kHz mono s16 frames (the project's path before it encoded itself):
  aiortc computes the audio level in Python, hops to its executor thread, resamples to stereo and encodes
  (96 kbps, complexity 10).
- `track`: the project's AvatarAudioTrack, which encodes Opus itself (transport/opus.py) and hands out
  packets that aiortc only packs, inline.
Speech is the packaged Piper voice (resampled to 48 kHz, looped); silence is what an idle session sends.
Prints CPU microseconds per frame: the process (both threads: what the session costs) and the event-loop
thread alone, min and median over the runs, plus the bitrate sent. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCRtpCodecParameters, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from common import BENCH_DIR, Reply, machine_info, run_bench
from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES, UnpacedClock
from liveavatar.transport.opus import OpusPacker, open_codec
from liveavatar.transport.tracks import AudioSource, AvatarAudioTrack, audio_frame
from liveavatar.transport.vp8 import use_encoder

TEXT = (
    "Hello there. I can tell you where the train station is: walk two blocks north, then turn left at the "
    "bakery, and you will see it across the square."
)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=AUDIO_RATE, channels=2, payloadType=111)


class Looped:
    """An AudioSource that plays `samples` over and over."""

    def __init__(self, samples: npt.NDArray[np.int16]) -> None:
        frames = len(samples) // AUDIO_SAMPLES
        self._frames = samples[: frames * AUDIO_SAMPLES].reshape(frames, AUDIO_SAMPLES)

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The frame at `t`, looped."""
        return np.ascontiguousarray(self._frames[round(t / AUDIO_PTIME) % len(self._frames)])


class FrameTrack(MediaStreamTrack):
    """The audio track as it was before it encoded: one raw 20 ms frame per recv()."""

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self._source = source
        self._index = 0

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = audio_frame(self._source.audio_frame(self._index * AUDIO_PTIME), self._index)
        self._index += 1
        return frame


def speech() -> npt.NDArray[np.int16]:
    """A few seconds of the packaged Piper voice at 48 kHz."""
    from liveavatar.speech.resample import resample
    from liveavatar.speech.voices import VoiceRegistry, discover_voices

    voices = VoiceRegistry(discover_voices())
    voice = voices.default_voice("en")
    tts = voices.tts_for(voice)

    async def collect() -> tuple[npt.NDArray[np.int16], int]:
        chunks = [chunk async for chunk in tts.synthesize(TEXT, voice)]
        return np.concatenate([c.audio for c in chunks]), chunks[0].sample_rate

    samples, rate = asyncio.run(collect())
    return resample(samples, rate, AUDIO_RATE)


async def one_run(path: str, source: AudioSource, frames: int) -> tuple[float, float, float]:
    """(process us, thread us) per frame and kbps for `frames` frames through a sender."""
    track: MediaStreamTrack = FrameTrack(source) if path == "aiortc" else AvatarAudioTrack(source, UnpacedClock())
    sender = RTCRtpSender(track, SimpleNamespace(state="new"))  # type: ignore[arg-type]
    if path == "track":
        use_encoder(sender, OpusPacker())
    sent = 0
    for _ in range(5):  # the encoder and the executor thread start outside the timing
        await sender._next_encoded_frame(OPUS)
    process, thread = time.process_time(), time.thread_time()
    for _ in range(frames):
        encoded = await sender._next_encoded_frame(OPUS)
        assert encoded is not None
        sent += sum(len(p) for p in encoded.payloads)
    process, thread = time.process_time() - process, time.thread_time() - thread
    track.stop()
    return 1e6 * process / frames, 1e6 * thread / frames, 8 * sent / (frames * AUDIO_PTIME) / 1000


def encode_cost(
    source: AudioSource, frames: int, application: str, complexity: int, bitrate: int
) -> tuple[float, float]:
    """(thread us per frame, kbps) of the encode alone with these Opus settings."""
    codec = open_codec(bitrate, complexity, application)
    pcm = [audio_frame(source.audio_frame(i * AUDIO_PTIME), i) for i in range(frames)]
    sent = 0
    started = time.thread_time()
    for frame in pcm:
        sent += sum(packet.size for packet in codec.encode(frame))
    return 1e6 * (time.thread_time() - started) / frames, 8 * sent / (frames * AUDIO_PTIME) / 1000


def sweep(sources: dict[str, AudioSource], frames: int, runs: int) -> Reply:
    """The encode alone for each setting: min thread us per frame over the runs, and kbps, per signal."""
    found: Reply = {}
    for application in ("audio", "voip"):
        for complexity in (0, 3, 5, 7, 10):
            for bitrate in (32_000, 48_000):
                row: Reply = {}
                for signal, source in sources.items():
                    costs = [encode_cost(source, frames, application, complexity, bitrate) for _ in range(runs)]
                    row[signal] = {"us_min": min(c[0] for c in costs), "kbps": costs[0][1]}
                found[f"{application} c{complexity} {bitrate // 1000}k"] = row
    return found


async def measure(frames: int, runs: int, with_sweep: bool) -> Reply:
    """Every path on speech and silence, the runs interleaved."""
    sources: dict[str, AudioSource] = {
        "speech": Looped(await asyncio.to_thread(speech)),
        "silence": Looped(np.zeros(AUDIO_SAMPLES, dtype=np.int16)),
    }
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(runs):
        for signal, source in sources.items():
            for path in ("aiortc", "track"):
                samples.setdefault((path, signal), []).append(await one_run(path, source, frames))
    results: Reply = {"machine": machine_info(), "frames": frames, "runs": runs}
    for (path, signal), values in samples.items():
        process, thread, kbps = zip(*values, strict=True)
        results[f"{path}/{signal}"] = {
            "process_us_min": min(process),
            "process_us_median": statistics.median(process),
            "thread_us_min": min(thread),
            "thread_us_median": statistics.median(thread),
            "kbps": statistics.median(kbps),
        }
    if with_sweep:
        results["sweep"] = sweep(sources, frames, runs)
    return results


def summary(results: Reply) -> str:
    """One line per path and signal."""
    machine = results["machine"]
    lines = [
        f"outbound audio, CPU us per 20 ms frame (min / median of {results['runs']} runs x {results['frames']} "
        f"frames); {machine['usable_cores']} cores, load {machine['load_average'][0]:.2f}",
        f"{'path/signal':<16} {'process':>15} {'event-loop thread':>19} {'kbps':>6}",
    ]
    for key, row in results.items():
        if "/" in key:
            lines.append(
                f"{key:<16} {row['process_us_min']:6.1f} / {row['process_us_median']:6.1f} "
                f"{row['thread_us_min']:8.1f} / {row['thread_us_median']:6.1f} {row['kbps']:6.1f}"
            )
    if "sweep" in results:
        lines.append("encode alone (min thread us per frame, kbps): setting, speech, silence")
        for setting, row in results["sweep"].items():
            speech, silence = row["speech"], row["silence"]
            lines.append(
                f"  {setting:<14} {speech['us_min']:6.1f} us {speech['kbps']:5.1f} kbps"
                f"   {silence['us_min']:6.1f} us {silence['kbps']:5.1f} kbps"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per run (1000 = 20 s of audio)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each path and signal, interleaved")
    parser.add_argument("--sweep", action="store_true", help="also time the encode alone for other Opus settings")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "audio.json")
    args = parser.parse_args(argv)
    return run_bench(measure(args.frames, args.runs, args.sweep), args.output, summary)


if __name__ == "__main__":
    sys.exit(main())
