"""The phoneme-driven mouth: TTS phoneme timings -> coarticulated viseme weights, every p/b/m closed."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from liveavatar.render.arrays import F64
from liveavatar.render.face import MOUTH_BASES
from liveavatar.render.mouth_curve import Playback, Weights
from liveavatar.render.visemes import VISEMES, EntryKind, entry_kind, visemes_for
from liveavatar.speech.base import PhonemeTiming

_WIDTH = len(MOUTH_BASES)


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
        self._play = Playback(p.step, p.lead, p.release)
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

    def _evaluate(self, t: F64) -> F64:
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
        out: F64 = np.clip(w, 0.0, 1.0)
        return out
