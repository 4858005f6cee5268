"""Lip-sync: phoneme timings (or bare audio) -> smooth mouth weights over MOUTH_BASES on the session clock.

Both sources sample their mouth curve on a fixed grid of the session clock when speech is queued, so
`weights_at(t)` is a lookup plus linear interpolation: deterministic and jitter-free whenever it is called.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.render.face import MOUTH_BASES
from liveavatar.render.visemes import VISEMES, EntryKind, entry_kind, visemes_for
from liveavatar.speech.base import PhonemeTiming

__all__ = ["AudioMouth", "AudioMouthParams", "LipSyncParams", "MouthSource", "MouthTimeline"]

Weights = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_WIDTH = len(MOUTH_BASES)
_JAW = MOUTH_BASES.index("jaw_open")
_WIDE = MOUTH_BASES.index("lips_wide")
_ROUND = MOUTH_BASES.index("lips_round")


class MouthSource(Protocol):
    """Anything the renderer can ask for mouth weights on the session clock."""

    def weights_at(self, t: float) -> Weights:
        """Mouth weights (float32, one per MOUTH_BASES entry, 0..1) at session time t."""
        ...

    def interrupt(self, t: float) -> None:
        """Drop all speech after t; the mouth eases back to rest."""
        ...

    def clear_before(self, t: float) -> None:
        """Forget everything before t (bounds memory; earlier times then read as rest)."""
        ...


class _Curve:
    """Rows of mouth weights at times k*step, kept in fixed-size blocks; rest wherever nothing was written."""

    _BLOCK = 256

    def __init__(self, step: float) -> None:
        self.step = step
        self._blocks: dict[int, _F64] = {}

    def write(self, k: int, rows: _F64) -> None:
        """Store rows at grid indices k, k+1, ..."""
        size = self._BLOCK
        done = 0
        while done < len(rows):
            b, i = divmod(k + done, size)
            n = min(size - i, len(rows) - done)
            block = self._blocks.get(b)
            if block is None:
                block = self._blocks[b] = np.zeros((size, _WIDTH))
            block[i : i + n] = rows[done : done + n]
            done += n

    def _get(self, k: int) -> _F64 | None:
        block = self._blocks.get(k // self._BLOCK)
        return None if block is None else block[k % self._BLOCK]

    def row(self, k: int) -> _F64:
        """A copy of the row at grid index k."""
        found = self._get(k)
        return np.zeros(_WIDTH) if found is None else np.array(found)

    def read(self, t: float) -> _F64:
        """Linear interpolation between the two grid rows around time t."""
        u = t / self.step
        i = math.floor(u)
        a, b = self._get(i), self._get(i + 1)
        if a is None and b is None:
            return np.zeros(_WIDTH)
        if a is None:
            a = np.zeros(_WIDTH)
        if b is None:
            b = np.zeros(_WIDTH)
        out: _F64 = a + (u - i) * (b - a)
        return out

    def truncate_from(self, k: int) -> None:
        """Forget rows at grid index k and later."""
        b, i = divmod(k, self._BLOCK)
        for key in [key for key in self._blocks if key > b]:
            del self._blocks[key]
        if b in self._blocks:
            self._blocks[b][i:] = 0.0

    def drop_before(self, k: int) -> None:
        """Forget rows before grid index k."""
        b, i = divmod(k, self._BLOCK)
        for key in [key for key in self._blocks if key < b]:
            del self._blocks[key]
        if b in self._blocks:
            self._blocks[b][:i] = 0.0


class _Playback:
    """A curve read `lead` ahead of the clock, with eased returns to rest after interrupts."""

    def __init__(self, step: float, lead: float, release: float) -> None:
        self.curve = _Curve(step)
        self.lead = lead
        self.release = release
        self._releases: list[tuple[float, _F64]] = []

    def weights_at(self, t: float) -> Weights:
        if not math.isfinite(t):
            return np.zeros(_WIDTH, dtype=np.float32)
        w = self.curve.read(t + self.lead)
        for t_r, w_r in reversed(self._releases):
            if t_r <= t:
                tau = t - t_r
                if tau < self.release:
                    r = 0.5 + 0.5 * math.cos(math.pi * tau / self.release)
                    w = r * w_r + (1.0 - r) * w
                break
        out: Weights = np.clip(w, 0.0, 1.0).astype(np.float32)
        return out

    def start_release(self, t: float) -> None:
        w = self.weights_at(t).astype(np.float64)
        self._releases = [r for r in self._releases if r[0] < t]
        self._releases.append((t, w))

    def forget_before(self, t: float) -> None:
        self.curve.drop_before(math.floor((t + self.lead) / self.curve.step) - 1)
        self._releases = [r for r in self._releases if r[0] + self.release >= t]


@dataclass(frozen=True)
class LipSyncParams:
    """Tuning of MouthTimeline (seconds unless said otherwise)."""

    lead: float = 0.03
    """The mouth runs this far ahead of the sound."""
    step: float = 0.005
    """Grid on which the curve is evaluated; weights_at interpolates between grid points."""
    spread: float = 0.035
    """Gaussian fall-off of a phoneme's dominance outside its interval (coarticulation reach)."""
    closure_min: float = 0.045
    """Shortest full lip closure for p/b/m: more than one frame at 25 fps, whatever the frame phase."""
    closure_share: float = 0.6
    """Longer bilabials hold the closure this share of their duration."""
    closure_ramp: float = 0.08
    """Time to close into and open out of a held closure."""
    short_duration: float = 0.03
    """Phonemes this short or shorter reach only `short_scale` of their target ..."""
    short_scale: float = 0.5
    full_duration: float = 0.09
    """... and phonemes this long or longer their full target (linear in between)."""
    boundary_max: float = 0.12
    """Word boundaries up to this long are shared by the neighbouring phonemes; longer ones rest."""
    nucleus_share: float = 0.6
    """Share of a diphthong's time given to its first vowel (the rest split evenly)."""
    release: float = 0.16
    """After interrupt(), time to ease back to rest."""


@dataclass(frozen=True)
class _Segment:
    """One viseme held over [start, end] on the session clock (sound time, before the lead)."""

    start: float
    end: float
    viseme: str
    target: tuple[float, ...]


@dataclass
class _Span:
    """A timed entry while its neighbours' marks and boundaries are merged into it."""

    kind: EntryKind
    phoneme: str
    start: float
    end: float


_CLOSURE = "PP"


def _neighbour(spans: list[_Span], i: int, step: int) -> _Span | None:
    """The nearest phone from spans[i] in direction step, skipping marks but not pauses or boundaries."""
    j = i + step
    while 0 <= j < len(spans):
        kind = spans[j].kind
        if kind == "phone":
            return spans[j]
        if kind not in ("stress", "mark"):
            return None
        j += step
    return None


def _plan(phonemes: Sequence[PhonemeTiming], start: float, duration: float, p: LipSyncParams) -> list[_Segment]:
    """Turn one chunk's timings into viseme segments: marks merged, boundaries shared, diphthongs split."""
    limit = start + duration if duration > 0 else math.inf
    spans: list[_Span] = []
    for ph in sorted(phonemes, key=lambda x: x.start):
        if not (math.isfinite(ph.start) and math.isfinite(ph.duration)):
            continue
        s = min(start + max(ph.start, 0.0), limit)
        e = min(s + max(ph.duration, 0.0), limit)
        spans.append(_Span(entry_kind(ph.phoneme), ph.phoneme, s, e))

    for i, span in enumerate(spans):
        if span.kind in ("stress", "mark"):
            # A stress mark belongs to the phoneme after it, a length mark or diacritic to the one before.
            order = (1, -1) if span.kind == "stress" else (-1, 1)
            for direction in order:
                owner = _neighbour(spans, i, direction)
                if owner is not None:
                    owner.start, owner.end = min(owner.start, span.start), max(owner.end, span.end)
                    break
        elif span.kind == "boundary" and span.end - span.start <= p.boundary_max:
            before, after = _neighbour(spans, i, -1), _neighbour(spans, i, 1)
            if before is not None and after is not None:
                mid = 0.5 * (span.start + span.end)
                before.end = max(before.end, mid)
                after.start = min(after.start, mid)

    segments: list[_Segment] = []
    for span in spans:
        if span.kind != "phone":
            continue
        names = visemes_for(span.phoneme)
        n = len(names)
        shares = [1.0] if n == 1 else [p.nucleus_share] + [(1.0 - p.nucleus_share) / (n - 1)] * (n - 1)
        s = span.start
        for name, share in zip(names, shares, strict=True):
            e = s + share * (span.end - span.start)
            if e > s or name == _CLOSURE:  # zero-length entries only keep their lip closure
                _append(segments, s, e, name)
            s = e
    return [_scaled(seg, p) for seg in segments]


def _append(segments: list[_Segment], s: float, e: float, name: str) -> None:
    last = segments[-1] if segments else None
    if last is not None and last.viseme == name and s - last.end <= 0.001:
        segments[-1] = _Segment(last.start, max(last.end, e), name, ())
    else:
        segments.append(_Segment(s, e, name, ()))


def _scaled(seg: _Segment, p: LipSyncParams) -> _Segment:
    """Give the segment its target: short phonemes reach less far, so fast speech does not flutter."""
    weights = VISEMES[seg.viseme].weights
    if seg.viseme == _CLOSURE:
        return _Segment(seg.start, seg.end, seg.viseme, weights)
    span = max(p.full_duration - p.short_duration, 1e-9)
    x = min(max((seg.end - seg.start - p.short_duration) / span, 0.0), 1.0)
    scale = p.short_scale + (1.0 - p.short_scale) * x
    return _Segment(seg.start, seg.end, seg.viseme, tuple(scale * w for w in weights))


class MouthTimeline:
    """Mouth weights from TTS phoneme timings: coarticulated, ahead of the sound, every p/b/m closed."""

    def __init__(self, params: LipSyncParams | None = None) -> None:
        self.params = params if params is not None else LipSyncParams()
        p = self.params
        self._play = _Playback(p.step, p.lead, p.release)
        self._segments: list[_Segment] = []
        self._starts: list[float] = []
        self._longest = 0.0
        # Beyond this distance a segment no longer changes the curve (dominance < 1e-10, ramps done).
        self._reach = max(5.0 * p.spread, p.closure_ramp + p.closure_min) + 2.0 * p.step
        self._closed = np.asarray(VISEMES[_CLOSURE].weights, dtype=np.float64)

    def add(self, phonemes: Sequence[PhonemeTiming], start: float, duration: float) -> None:
        """Queue one chunk's timings; start is the session time its first sample is played."""
        if not (math.isfinite(start) and math.isfinite(duration)):
            raise ValueError("start and duration must be finite")
        new = _plan(phonemes, start, duration, self.params)
        if not new:
            return
        for seg in new:
            i = bisect.bisect_right(self._starts, seg.start)
            self._starts.insert(i, seg.start)
            self._segments.insert(i, seg)
            self._longest = max(self._longest, seg.end - seg.start)
        lo = min(seg.start for seg in new) - self._reach
        hi = max(seg.end for seg in new) + self._reach
        self._render(lo, hi)

    def weights_at(self, t: float) -> Weights:
        """Mouth weights at session time t (float32 over MOUTH_BASES, 0..1)."""
        return self._play.weights_at(t)

    def interrupt(self, t: float) -> None:
        """Drop every phoneme after session time t; the mouth eases to rest over `release`."""
        self._play.start_release(t)
        kept: list[_Segment] = []
        for seg in self._segments:
            if seg.start >= t:
                continue
            kept.append(_Segment(seg.start, min(seg.end, t), seg.viseme, seg.target))
        self._segments = kept
        self._starts = [seg.start for seg in kept]
        k = math.floor(t / self.params.step)
        self._play.curve.truncate_from(k)
        self._render(t - self.params.step, t + self._reach)

    def clear_before(self, t: float) -> None:
        """Forget phonemes and samples before session time t."""
        horizon = t - 2.0 * self._reach - self._longest
        keep = [seg for seg in self._segments if seg.end >= horizon]
        self._segments = keep
        self._starts = [seg.start for seg in keep]
        self._play.forget_before(t)

    def _window(self, lo: float, hi: float) -> list[_Segment]:
        """Segments that can influence times in [lo, hi], with silence filled into every gap."""
        reach = self._reach
        first = bisect.bisect_left(self._starts, lo - reach - self._longest)
        last = bisect.bisect_right(self._starts, hi + reach)
        found = [seg for seg in self._segments[first:last] if seg.end >= lo - reach]
        rest = VISEMES["sil"].weights
        out: list[_Segment] = []
        cursor = lo - 2.0 * reach
        for seg in found:
            if seg.start > cursor:
                out.append(_Segment(cursor, seg.start, "sil", rest))
            out.append(seg)
            cursor = max(cursor, seg.end)
        end = hi + 2.0 * reach
        if cursor < end:
            out.append(_Segment(cursor, end, "sil", rest))
        return out

    def _render(self, lo: float, hi: float) -> None:
        """Recompute the curve on the grid points in [lo, hi]."""
        p = self.params
        k_lo, k_hi = math.floor(lo / p.step), math.ceil(hi / p.step)
        block = 400
        for k in range(k_lo, k_hi + 1, block):
            ks = np.arange(k, min(k + block, k_hi + 1))
            self._play.curve.write(k, self._evaluate(ks * p.step))

    def _evaluate(self, t: _F64) -> _F64:
        """Coarticulated weights at times t: dominance-weighted targets, then forced lip closures."""
        p = self.params
        segs = self._window(float(t[0]), float(t[-1]))
        starts = np.array([s.start for s in segs])
        ends = np.array([s.end for s in segs])
        targets = np.array([s.target for s in segs], dtype=np.float64).reshape(len(segs), _WIDTH)
        alpha = np.array([VISEMES[s.viseme].dominance for s in segs])
        # A silence only pulls as hard as it is long: tiny gaps between phonemes must not dip the mouth.
        is_rest = np.array([s.viseme == "sil" for s in segs])
        alpha = np.where(is_rest, alpha * np.clip((ends - starts) / p.full_duration, 0.0, 1.0), alpha)
        alpha = np.maximum(alpha, 1e-6)
        tt = t[:, None]
        dist = np.maximum(np.maximum(starts[None, :] - tt, tt - ends[None, :]), 0.0)
        dom = alpha[None, :] * np.exp(-np.square(dist / p.spread))
        w = (dom @ targets) / dom.sum(axis=1, keepdims=True)

        closures = [s for s in segs if s.viseme == _CLOSURE]
        if closures:
            centre = np.array([0.5 * (s.start + s.end) for s in closures])
            half = np.array([0.5 * max(p.closure_min, p.closure_share * (s.end - s.start)) for s in closures])
            ramp = max(p.closure_ramp, 1e-6)
            h = np.clip((half[None, :] + ramp - np.abs(tt - centre[None, :])) / ramp, 0.0, 1.0).max(axis=1)
            w = w * (1.0 - h[:, None]) + h[:, None] * self._closed[None, :]
        out: _F64 = np.clip(w, 0.0, 1.0)
        return out


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
    """Upper-band (0.7-3.5 kHz) spectral centroid, roughly F2, from which lips start to spread to where
    they are fully spread (i, e, s)."""
    round_hz: tuple[float, float] = (1500.0, 1000.0)
    """Upper-band centroid from which lips start to round to where they are fully round (o, u)."""
    open_hz: tuple[float, float] = (450.0, 700.0)
    """Lower-band (0.2-1 kHz) centroid, roughly F1, over which rounding fades out: open vowels (a) have a
    low F2 too but are not rounded."""
    attack: float = 0.02
    """Time constant of opening."""
    decay: float = 0.05
    """Time constant of closing."""
    release: float = 0.16
    """After interrupt(), time to ease back to rest."""
    max_fill: float = 0.5
    """Gaps up to this long between fed pieces are treated as silence within one stream."""


def _centroid(power: _F64, freqs: _F64, lo: float, hi: float) -> _F64:
    """Power-weighted mean frequency of each frame within [lo, hi) Hz."""
    band = (freqs >= lo) & (freqs < hi)
    weights = power[:, band]
    out: _F64 = (weights @ freqs[band]) / (weights.sum(axis=1) + 1e-20)
    return out


def _ramp(x: _F64, start: float, full: float) -> _F64:
    """0 at `start`, 1 at `full` (either direction), linear and clipped in between."""
    out: _F64 = np.clip((x - start) / (full - start), 0.0, 1.0)
    return out


class AudioMouth:
    """Mouth weights from audio alone (energy -> jaw, spectral shape -> wide/round) for untimed voices."""

    def __init__(self, params: AudioMouthParams | None = None) -> None:
        self.params = params if params is not None else AudioMouthParams()
        p = self.params
        self._play = _Playback(p.hop, p.lead, p.release)
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
        self._state: tuple[_F64, float] = (np.zeros(_WIDTH), self._peak)

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

    def _write_tail(self, k: int, y: _F64) -> None:
        """After the last analysed frame the mouth decays to rest (and reads rest beyond)."""
        p = self.params
        n = np.arange(1, self._tail + 1, dtype=np.float64)
        rows = y[None, :] * np.exp(-n * p.hop / p.decay)[:, None]
        self._play.curve.truncate_from(k)
        self._play.curve.write(k, rows)
