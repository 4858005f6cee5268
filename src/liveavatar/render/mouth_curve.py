"""The mouth curve: weights on a grid of the session clock, read ahead of it, eased to rest after interrupts."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.render.arrays import F64
from liveavatar.render.face import MOUTH_BASES

Weights = npt.NDArray[np.float32]
_WIDTH = len(MOUTH_BASES)


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


# Both mouths write their curve when speech is queued, so reading it is a lookup plus linear interpolation:
# deterministic and jitter-free whenever the renderer asks.
class Curve:
    """Rows of mouth weights at times k*step, kept in fixed-size blocks; rest wherever nothing was written."""

    _BLOCK = 256

    def __init__(self, step: float) -> None:
        self.step = step
        self._blocks: dict[int, F64] = {}

    def write(self, k: int, rows: F64) -> None:
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

    def _get(self, k: int) -> F64 | None:
        block = self._blocks.get(k // self._BLOCK)
        return None if block is None else block[k % self._BLOCK]

    def row(self, k: int) -> F64:
        """A copy of the row at grid index k."""
        found = self._get(k)
        return np.zeros(_WIDTH) if found is None else np.array(found)

    def read(self, t: float) -> F64:
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
        out: F64 = a + (u - i) * (b - a)
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


class Playback:
    """A curve read `lead` ahead of the clock, with eased returns to rest after interrupts."""

    def __init__(self, step: float, lead: float, release: float) -> None:
        self.curve = Curve(step)
        self.lead = lead
        self.release = release
        self._releases: list[tuple[float, F64]] = []

    def weights_at(self, t: float) -> Weights:
        """Mouth weights at session time t (float32 over MOUTH_BASES, 0..1)."""
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
        """Ease from the weights at t back to whatever the curve holds, over `release`."""
        w = self.weights_at(t).astype(np.float64)
        self._releases = [r for r in self._releases if r[0] < t]
        self._releases.append((t, w))

    def forget_before(self, t: float) -> None:
        """Forget samples and finished releases before session time t."""
        self.curve.drop_before(math.floor((t + self.lead) / self.curve.step) - 1)
        self._releases = [r for r in self._releases if r[0] + self.release >= t]
