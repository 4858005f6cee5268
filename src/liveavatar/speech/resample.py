"""The one resampler: PCM at any rate and channel count -> mono at another rate (Kaiser-windowed polyphase FIR).

`Resampler` streams (inbound microphone frames -> 16 kHz for VAD and STT; state carries across frames);
`resample` converts a whole signal at once (speech chunks -> 48 kHz for playback). Both give what scipy's
`resample_poly` gives, to float32 rounding.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError

LISTEN_RATE: Final = 16000
"""The sample rate the listening pipeline (Silero VAD, Whisper) works at."""
HALF_TAPS: Final = 10
"""Filter half-length in samples of the slower rate (as scipy's resample_poly): ~0.6 ms delay at 48->16 kHz."""
KAISER_BETA: Final = 5.0

FloatAudio = npt.NDArray[np.float32]


@functools.cache
def polyphase_filter(rate_in: int, rate_out: int) -> tuple[int, int, int, npt.NDArray[np.float32]]:
    """(up, down, delay, phases) of a Kaiser-windowed sinc low-pass for rate_in -> rate_out, shared read-only.

    `phases[p, k]` is tap `p + k * up` of the prototype filter (designed at rate_in * up), so each output
    sample is one dot product of a phase row with the last `phases.shape[1]` input samples. `delay` is the
    filter's group delay in upsampled samples; outputs are shifted by it so output n sits at time n/rate_out.
    """
    gcd = math.gcd(rate_in, rate_out)
    up, down = rate_out // gcd, rate_in // gcd
    widest = max(up, down)
    half = HALF_TAPS * widest
    n = np.arange(2 * half + 1, dtype=np.float64) - half
    cutoff = 1.0 / widest  # fraction of the upsampled Nyquist: the slower rate's Nyquist
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(len(n), KAISER_BETA)
    taps *= up / taps.sum()  # unity gain through each phase after zero-stuffing by `up`
    width = -(-len(taps) // up)
    padded = np.zeros(width * up, dtype=np.float64)
    padded[: len(taps)] = taps
    phases = padded.reshape(width, up).T.astype(np.float32)  # [p, k] = taps[p + k*up]
    phases.setflags(write=False)
    return up, down, half, phases


def resample(samples: npt.NDArray[np.int16], rate_in: int, rate_out: int) -> npt.NDArray[np.int16]:
    """A whole mono int16 signal at `rate_in` resampled to `rate_out`: ceil(n * rate_out / rate_in) samples."""
    if rate_in == rate_out or len(samples) == 0:
        return np.asarray(samples, dtype=np.int16)
    resampler = Resampler(rate_out)
    return to_int16(np.concatenate((resampler.process(samples, rate_in), resampler.flush())))


def to_int16(audio: FloatAudio) -> npt.NDArray[np.int16]:
    """-1..1 float audio as signed 16-bit samples (rounded, clipped)."""
    scaled: FloatAudio = np.rint(audio * np.float32(32768))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


class Resampler:
    """Stateful converter for one stream: s16 (or float) PCM, any rate/channels -> mono float32 at `rate_out`.

    Cheap: one small polyphase FIR per output sample (61 taps at 48 -> 16 kHz, ~30-60 us per 20 ms frame).
    State carries across calls, so feeding a signal in frames of any size gives the same output as feeding
    it whole. A change of input rate starts the filter afresh.
    """

    def __init__(self, rate_out: int = LISTEN_RATE) -> None:
        self.rate_out = rate_out
        self._rate_in = 0
        self._history = np.zeros(0, dtype=np.float32)
        self._first_index = 0  # absolute input index of _history[0]
        self._next_output = 0  # absolute index of the next output sample (per current input rate)
        self.emitted = 0
        """Output samples produced so far: `emitted / rate_out` is the stream time of the next output sample."""

    def process(self, samples: npt.NDArray[np.int16] | FloatAudio, sample_rate: int, channels: int = 1) -> FloatAudio:
        """Convert one chunk of int16 (or -1..1 float) PCM, interleaved ((n*ch,) or (1, n*ch)) or planar (ch, n)."""
        mono = _to_mono(samples, channels)
        if sample_rate <= 0:
            raise ParamError(f"sample rate must be positive, got {sample_rate}")
        if sample_rate != self._rate_in:
            self._start(sample_rate)
        if sample_rate == self.rate_out:
            self.emitted += len(mono)
            return mono
        return self._filter(mono)

    def flush(self) -> FloatAudio:
        """Output the samples still held back by the filter delay: the end of a stream (reset() before reuse)."""
        if self._rate_in in (0, self.rate_out):
            return np.zeros(0, dtype=np.float32)
        up, _, delay, _ = polyphase_filter(self._rate_in, self.rate_out)
        return self._filter(np.zeros(-(-delay // up) + 2, dtype=np.float32), limit_to_input=True)

    def reset(self) -> None:
        """Forget all state (a new stream); `emitted` starts again at 0."""
        self._rate_in = 0
        self._history = np.zeros(0, dtype=np.float32)
        self.emitted = 0

    def _start(self, sample_rate: int) -> None:
        self._rate_in = sample_rate
        self._first_index = 0
        self._next_output = 0
        if sample_rate != self.rate_out:
            width = polyphase_filter(sample_rate, self.rate_out)[3].shape[1]
            # Zeros before the first sample; the first call loses nothing to the filter's warm-up.
            self._history = np.zeros(width - 1, dtype=np.float32)
            self._first_index = -(width - 1)
        else:
            self._history = np.zeros(0, dtype=np.float32)

    def _filter(self, mono: FloatAudio, *, limit_to_input: bool = False) -> FloatAudio:
        up, down, delay, phases = polyphase_filter(self._rate_in, self.rate_out)
        width = phases.shape[1]
        if limit_to_input:  # flush: stop at the output sample of the last real input sample
            real_last = self._first_index + len(self._history) - 1
        history = np.concatenate((self._history, mono)) if len(self._history) else mono
        last = self._first_index + len(history) - 1
        # Output n reads input i0 = (n*down + delay) // up and the width-1 samples before it.
        stop = (last * up + up - 1 - delay) // down + 1
        if limit_to_input:
            stop = min(stop, ((real_last + 1) * up + down - 1) // down)  # ceil(inputs * up / down)
        start = self._next_output
        out: FloatAudio
        if stop > start:
            count = stop - start
            # Output n + up reads `down` inputs after output n with the same phase: the first `up` say it all.
            position = np.arange(start, start + min(up, count), dtype=np.int64) * down + delay
            newest = position // up - self._first_index
            if up == 1:  # plain decimation (48 -> 16 kHz): one fast convolution, then every `down`-th sample
                lo = int(newest[0])
                full = np.convolve(history[lo - width + 1 : lo + (count - 1) * down + 1], phases[0], mode="valid")
                out = full[::down].astype(np.float32, copy=False)
            else:
                out = _polyphase(history, newest, position % up, count, phases, up, down)
            self._next_output = stop
        else:
            out = np.zeros(0, dtype=np.float32)
        keep_from = (self._next_output * down + delay) // up - (width - 1)  # oldest input still needed
        cut = max(0, keep_from - self._first_index)
        self._history = history[cut:].copy() if cut else history.copy()
        self._first_index += cut
        self.emitted += len(out)
        return out


def _polyphase(
    history: FloatAudio,
    newest: npt.NDArray[np.int64],
    phase: npt.NDArray[np.int64],
    count: int,
    phases: npt.NDArray[np.float32],
    up: int,
    down: int,
) -> FloatAudio:
    """`count` outputs; output r (r < up) is phase row `phase[r]` dotted with the inputs ending at `newest[r]`.

    Output r + j*up uses the same phase row, `j*down` inputs further on, so the outputs are computed as
    `up` strided matrix-vector products (~1 ms per second of 22.05 -> 48 kHz speech) rather than one
    gather of count * width samples (~40 ms).
    """
    width = phases.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(history, width)  # windows[i] = history[i : i + width]
    reversed_phases = phases[:, ::-1]  # windows run oldest first, phase rows newest first
    out = np.empty(count, dtype=np.float32)
    for first in range(min(up, count)):
        begin = int(newest[first]) - width + 1
        rows = windows[begin : begin + (len(range(first, count, up)) - 1) * down + 1 : down]
        out[first::up] = np.einsum("nk,k->n", rows, reversed_phases[phase[first]])
    return out


def _to_mono(samples: npt.NDArray[np.int16] | FloatAudio, channels: int) -> FloatAudio:
    """Interleaved or planar PCM -> mono float32 in -1..1 (channels averaged)."""
    if channels < 1:
        raise ParamError(f"channels must be at least 1, got {channels}")
    data = np.asarray(samples)
    if data.dtype == np.int16:
        scaled = data.astype(np.float32) * np.float32(1 / 32768)
    elif data.dtype.kind == "f":
        scaled = data.astype(np.float32, copy=False)
    else:
        raise ParamError(f"PCM must be int16 or float, got {data.dtype}")
    if channels == 1:
        return np.ascontiguousarray(scaled.reshape(-1))
    if scaled.ndim == 2 and scaled.shape[0] == channels:  # planar (e.g. av "s16p"): one row per channel
        return np.ascontiguousarray(scaled.mean(axis=0, dtype=np.float32), dtype=np.float32)
    flat = scaled.reshape(-1)
    if len(flat) % channels:
        raise ParamError(f"{len(flat)} interleaved samples do not split into {channels} channels")
    return np.ascontiguousarray(flat.reshape(-1, channels).mean(axis=1, dtype=np.float32), dtype=np.float32)
