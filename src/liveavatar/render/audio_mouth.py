"""The audio-driven mouth, for voices without phoneme timings: loudness opens the jaw, spectrum shapes the lips."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from liveavatar.render.arrays import F64
from liveavatar.render.face import MOUTH_BASES
from liveavatar.render.mouth_curve import Playback, Weights

_WIDTH = len(MOUTH_BASES)
_JAW = MOUTH_BASES.index("jaw_open")
_WIDE = MOUTH_BASES.index("lips_wide")
_ROUND = MOUTH_BASES.index("lips_round")


@dataclass(frozen=True)
class AudioMouthParams:
    """Tuning of AudioMouth (seconds unless said otherwise)."""

    lead: float = 0.03
    """The mouth runs this far ahead of the sound."""
    hop: float = 0.01
    """Analysis frame interval (frames sit on multiples of hop of the session clock)."""
    window: float = 0.025
    """Analysis window, centred on the frame time."""
    gate_db: float = -55.0
    """Frames quieter than this (dB full scale) are silence."""
    range_db: float = 30.0
    """Levels from this far below the running peak up to it open the jaw from 0 to jaw_max."""
    peak_floor_db: float = -30.0
    """The running peak never falls below this, so quiet noise never opens the mouth wide."""
    peak_decay_db: float = 4.0
    """The running peak falls this many dB per second (slow gain control)."""
    jaw_max: float = 0.65
    wide_max: float = 0.5
    round_max: float = 0.6
    wide_hz: tuple[float, float] = (1600.0, 2300.0)
    """Upper-band (0.7-3.5 kHz) centroid, roughly F2, from which lips start to spread to fully spread (i, e, s)."""
    round_hz: tuple[float, float] = (1500.0, 1000.0)
    """Upper-band centroid from which lips start to round to where they are fully round (o, u)."""
    open_hz: tuple[float, float] = (450.0, 700.0)
    """Lower-band (0.2-1 kHz) centroid, roughly F1, over which rounding fades out (open a: low F2, not round)."""
    attack: float = 0.02
    """Time constant of opening."""
    decay: float = 0.05
    """Time constant of closing."""
    release: float = 0.16
    """After interrupt(), time to ease back to rest."""
    max_fill: float = 0.5
    """Gaps up to this long between fed pieces are treated as silence within one stream."""


def _centroid(power: F64, freqs: F64, lo: float, hi: float) -> F64:
    """Power-weighted mean frequency of each frame within [lo, hi) Hz."""
    band = (freqs >= lo) & (freqs < hi)
    weights = power[:, band]
    out: F64 = (weights @ freqs[band]) / (weights.sum(axis=1) + 1e-20)
    return out


def _ramp(x: F64, start: float, full: float) -> F64:
    """0 at `start`, 1 at `full` (either direction), linear and clipped in between."""
    out: F64 = np.clip((x - start) / (full - start), 0.0, 1.0)
    return out


class AudioMouth:
    """Mouth weights from audio alone (energy -> jaw, spectral shape -> wide/round) for untimed voices."""

    def __init__(self, params: AudioMouthParams | None = None) -> None:
        self.params = params if params is not None else AudioMouthParams()
        p = self.params
        self._play = Playback(p.hop, p.lead, p.release)
        self._a_up = 1.0 - math.exp(-p.hop / p.attack)
        self._a_down = 1.0 - math.exp(-p.hop / p.decay)
        self._tail = max(1, math.ceil(6.0 * p.decay / p.hop))
        self._peak = p.peak_floor_db
        # The current stream: samples from origin time `_origin` at `_rate`, of which `_buf` holds those from
        # index `_n0`; frames from `_next_k` on are provisional (their window was not complete yet).
        self._rate = 0
        self._origin = 0.0
        self._buf: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._n0 = 0
        self._next_k = 0
        self._state: tuple[F64, float] = (np.zeros(_WIDTH), self._peak)

    def feed(self, audio: npt.NDArray[np.int16], sample_rate: int, start: float) -> None:
        """Add mono 16-bit audio whose first sample is played at session time start (feed in time order)."""
        if sample_rate <= 0 or not math.isfinite(start):
            raise ValueError("sample_rate must be positive and start finite")
        x = np.asarray(audio).reshape(-1).astype(np.float32) / 32768.0
        if len(x) == 0:
            return
        end = self._origin + (self._n0 + len(self._buf)) / self._rate if self._rate else -math.inf
        gap = start - end
        if self._rate == sample_rate and abs(gap) <= max(1.5 / sample_rate, 1e-3):
            pass
        elif self._rate == sample_rate and 0 < gap <= self.params.max_fill:
            x = np.concatenate([np.zeros(round(gap * sample_rate), dtype=np.float32), x])
        else:
            self._open(start, sample_rate)
        self._buf = np.concatenate([self._buf, x])
        self._analyse()

    def weights_at(self, t: float) -> Weights:
        """Mouth weights at session time t (float32 over MOUTH_BASES, 0..1)."""
        return self._play.weights_at(t)

    def interrupt(self, t: float) -> None:
        """Drop all audio after session time t; the mouth eases to rest over `release`."""
        self._play.start_release(t)
        k = math.floor(t / self.params.hop)
        self._write_tail(k + 1, self._play.curve.row(k))
        self._rate = 0  # the next feed opens a new stream

    def clear_before(self, t: float) -> None:
        """Forget analysis frames before session time t."""
        self._play.forget_before(t)

    def _open(self, start: float, rate: int) -> None:
        """Start a new stream at `start`; the mouth carries on from whatever the curve holds there."""
        p = self.params
        self._rate, self._origin = rate, start
        self._buf, self._n0 = np.zeros(0, dtype=np.float32), 0
        self._next_k = math.ceil((start - 0.5 * p.window) / p.hop)
        self._state = (self._play.curve.row(self._next_k - 1), self._peak)

    def _analyse(self) -> None:
        """Analyse frames from the first provisional one to the last that touches the fed audio."""
        p = self.params
        rate = self._rate
        end = self._origin + (self._n0 + len(self._buf)) / rate
        k_first = self._next_k
        k_last = math.floor((end + 0.5 * p.window) / p.hop)
        if k_last < k_first:
            return
        ks = np.arange(k_first, k_last + 1)
        width = max(4, round(p.window * rate))
        first_index = np.round((ks * p.hop - self._origin) * rate - 0.5 * width).astype(np.int64)
        lo, hi = int(first_index[0]), int(first_index[-1]) + width
        padded = np.zeros(hi - lo, dtype=np.float32)
        a, b = max(lo, self._n0), min(hi, self._n0 + len(self._buf))
        if b > a:
            padded[a - lo : b - lo] = self._buf[a - self._n0 : b - self._n0]
        frames = np.lib.stride_tricks.sliding_window_view(padded, width)[first_index - lo]
        level = 10.0 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
        power = np.square(np.abs(np.fft.rfft(frames * np.hanning(width), axis=1)))
        freqs = np.fft.rfftfreq(width, 1.0 / rate)
        f2 = _centroid(power, freqs, 700.0, min(3500.0, 0.48 * rate))
        f1 = _centroid(power, freqs, 200.0, 1000.0)
        wide = _ramp(f2, *p.wide_hz)
        rounded = _ramp(f2, *p.round_hz) * _ramp(f1, *p.open_hz[::-1])

        final_k = math.floor((end - 0.5 * p.window) / p.hop)
        y, peak = self._state
        y = y.copy()
        rows = np.zeros((len(ks), _WIDTH))
        fall = p.peak_decay_db * p.hop
        for j in range(len(ks)):
            peak = max(peak - fall, float(level[j]), p.peak_floor_db)
            opening = 0.0
            if level[j] >= p.gate_db:
                opening = min(max((float(level[j]) - peak + p.range_db) / p.range_db, 0.0), 1.0)
            target = np.zeros(_WIDTH)
            target[_JAW] = p.jaw_max * opening
            target[_WIDE] = p.wide_max * opening * wide[j]
            target[_ROUND] = p.round_max * opening * rounded[j]
            y += np.where(target > y, self._a_up, self._a_down) * (target - y)
            rows[j] = y
            if ks[j] == final_k:
                self._state, self._peak = (y.copy(), peak), peak
        self._play.curve.write(k_first, rows)
        self._write_tail(k_last + 1, y)
        if final_k >= k_first:
            self._next_k = final_k + 1
            keep_from = int(round((self._next_k * p.hop - self._origin) * rate - 0.5 * width)) - 1
            if keep_from > self._n0:
                self._buf = self._buf[keep_from - self._n0 :]
                self._n0 = keep_from

    def _write_tail(self, k: int, y: F64) -> None:
        """After the last analysed frame the mouth decays to rest (and reads rest beyond)."""
        p = self.params
        n = np.arange(1, self._tail + 1, dtype=np.float64)
        rows = y[None, :] * np.exp(-n * p.hop / p.decay)[:, None]
        self._play.curve.truncate_from(k)
        self._play.curve.write(k, rows)
