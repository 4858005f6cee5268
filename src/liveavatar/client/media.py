"""Client-side media: a microphone track fed from a WAV file or from PCM frames."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from liveavatar.media import AUDIO_RATE as RATE
from liveavatar.media import AUDIO_SAMPLES as FRAME
from liveavatar.speech.resample import Resampler, to_int16
from liveavatar.transport.tracks import audio_frame


def read_wav(path: str | Path) -> tuple[npt.NDArray[np.int16], int]:
    """A 16-bit PCM WAV file as mono samples and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        channels = wav.getnchannels()
        rate = wav.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data, rate


class MicrophoneTrack(MediaStreamTrack):
    """An outbound audio track: plays what is `push()`ed (any rate), silence otherwise, in real time.

    Pushes follow on from each other through one streaming resampler (no seam between pushed frames); the
    filter's last ~0.6 ms of input is sent when the pushed audio runs out.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._resampler = Resampler(RATE)
        self._buffer = np.zeros(0, dtype=np.int16)
        self._index = 0
        self._start: float | None = None
        self.drained = asyncio.Event()
        """Set whenever everything pushed so far has been sent."""
        self.drained.set()

    def push(self, samples: npt.NDArray[np.int16], rate: int = RATE) -> None:
        """Queue mono int16 samples to be sent after what is queued already."""
        self._buffer = np.concatenate([self._buffer, to_int16(self._resampler.process(samples, rate))])
        if len(self._buffer):
            self.drained.clear()

    def push_wav(self, path: str | Path) -> None:
        """Queue a WAV file."""
        samples, rate = read_wav(path)
        self.push(samples, rate)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._index * FRAME / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(self._buffer) < FRAME:  # the pushed audio ends here: let the filter's held-back tail out
            self._buffer = np.concatenate([self._buffer, to_int16(self._resampler.flush())])
            self._resampler.reset()
        chunk, self._buffer = self._buffer[:FRAME], self._buffer[FRAME:]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.int16)])
            self.drained.set()
        frame = audio_frame(chunk, self._index)
        self._index += 1
        return frame
