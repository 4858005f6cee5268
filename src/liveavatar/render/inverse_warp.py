"""The renderer's backward maps: the head's rigid motion and the warp fields inverted by fixed-point iteration."""

from __future__ import annotations

import math

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64
from liveavatar.render.pack import AvatarPack

ITERATIONS = 3
"""Fixed-point steps that invert the forward fields (steep at the lips)."""
_NO_MAP = np.empty((0, 0), np.float32)
"""Second map for cv2.remap when the first holds (x, y) pairs."""
COARSE = 4
"""The fields are inverted on a grid this much coarser, except around the parted lips."""


class Rigid:
    """Head motion, backward: q = p + hw(p) * (m p + t) - dy * body(p), in band coordinates."""

    def __init__(self, roll: float, dx: float, dy: float, pivot: tuple[float, float]) -> None:
        th = math.radians(roll)
        c, s = math.cos(th), math.sin(th)
        px, py = pivot
        self.m = np.array([[c - 1, s], [-s, c - 1]])
        self.t = -(self.m @ [px, py]) - np.array([[c, s], [-s, c]]) @ [dx, dy]
        self.dy = dy
        # the forward map's inverse, as scalars (the same arithmetic as inverting eye(2) + m)
        (m00, m01), (m10, m11) = self.m.tolist()
        self._inv = (1.0 + m00, m01, m10, 1.0 + m11)
        self._det = self._inv[0] * self._inv[3] - self._inv[1] * self._inv[2]
        self._t = (float(self.t[0]), float(self.t[1]))

    def forward(self, pts: F64) -> F64:
        """Where rest points of the head (band coordinates) appear in the frame."""
        a, b, c, d = self._inv
        det = self._det
        out = np.empty_like(pts, dtype=np.float64)
        x, y = pts[:, 0] - self._t[0], pts[:, 1] - self._t[1]
        out[:, 0] = (d * x - b * y) / det
        out[:, 1] = (a * y - c * x) / det
        return out

    def backward(self, x: F64, y: F64) -> tuple[F64, F64]:
        """Where frame points of the head sample the rest frame (band coordinates)."""
        (m00, m01), (m10, m11) = self.m
        return x + m00 * x + m01 * y + self.t[0], y + m10 * x + m11 * y + self.t[1]


class Maps:
    """The renderer's backward maps over one box of the band, kept contiguous, addressed in band coordinates."""

    def __init__(self, x: F32, y: F32, origin: tuple[int, int], band: tuple[int, int]) -> None:
        self.x, self.y = x, y
        self.x0, self.y0 = origin
        self.x1, self.y1 = self.x0 + x.shape[1], self.y0 + x.shape[0]
        self.band = band
        """The band's size (width, height)."""

    def at(self, x0: int, y0: int, x1: int, y1: int) -> tuple[F32, F32]:
        """Views of both maps over a box of the band (which must lie inside the maps' box)."""
        ys, xs = slice(y0 - self.y0, y1 - self.y0), slice(x0 - self.x0, x1 - self.x0)
        return self.x[ys, xs], self.y[ys, xs]


class FieldGroup:
    """Fields inverted together by fixed-point iteration over one box of the band (shared, read-only)."""

    def __init__(self, pack: AvatarPack, names: tuple[str, ...], top: int, margin: int) -> None:
        fields = {n: pack.fields[n] for n in names if n in pack.fields}
        # one pixel of zeros all round: sampling outside then stays on OpenCV's fast path (replicate)
        self.x0 = min(f.x for f in fields.values()) - 1
        self.y0 = min(f.y for f in fields.values()) - top - 1
        self.x1 = max(f.x + f.data.shape[1] for f in fields.values()) + 1
        self.y1 = max(f.y + f.data.shape[0] for f in fields.values()) - top + 1
        shape = (self.y1 - self.y0, self.x1 - self.x0, 2)
        self.stack: dict[str, F32] = {}
        """Each field over its own box (elsewhere in the group's box it is zero)."""
        self.boxes: dict[str, tuple[slice, slice]] = {}
        self.reach: dict[str, float] = {}
        for n, f in fields.items():
            fy, fx = f.y - top - self.y0, f.x - self.x0
            self.boxes[n] = (slice(fy, fy + f.data.shape[0]), slice(fx, fx + f.data.shape[1]))
            self.stack[n] = f.data.astype(np.float32)
            self.reach[n] = float(np.abs(self.stack[n]).max())
        self.shape = shape
        self.corners = np.array([[self.x0, self.y0], [self.x1, self.y0], [self.x0, self.y1], [self.x1, self.y1]], float)
        # the most the maps may change around the box: mixed fields and the head's own motion
        r = int(1.5 * max(self.reach.values()) + margin) + 2
        self.limit = (self.x0 - r, self.y0 - r, self.x1 + r, self.y1 + r)

    def full(self, name: str) -> F32:
        """One field over the group's whole box (H x W x 2)."""
        out = np.zeros(self.shape, np.float32)
        out[self.boxes[name]] = self.stack[name]
        return out

    def solve(
        self,
        weights: dict[str, float],
        maps: Maps,
        rigid: Rigid,
        acc: F32,
        sharp: tuple[int, int, int, int] | None = None,
    ) -> tuple[int, int, int, int] | None:
        """Replace the maps over a box by the inverse of the weighted forward fields; returns that box."""
        # the fields are smooth except across the lips' seam, so the box is solved on a coarse grid
        # and only the `sharp` box (the parted lips, band coordinates) at full resolution
        active = [(n, w) for n, w in weights.items() if n in self.stack and abs(w) > 1e-4]
        if not active:
            return None
        acc[:] = 0.0
        reach = 2.0
        for n, w in active:
            part = acc[self.boxes[n]]  # adding the zeros around a field's own box would change nothing
            cv2.scaleAdd(self.stack[n], w, part, dst=part)
            reach += abs(w) * self.reach[n]
        corners = rigid.forward(self.corners)
        k = COARSE
        x0, y0 = np.floor(corners.min(0) - reach).astype(int) // k * k
        x1, y1 = np.ceil(corners.max(0) + reach).astype(int) // k * k
        lx0, ly0, lx1, ly1 = self.limit
        # the maps' box holds the group's limit, so clipping to it changes nothing; it only guards `maps.at`
        (bw, bh), (mx0, my0, mx1, my1) = maps.band, (maps.x0, maps.y0, maps.x1, maps.y1)
        x0, y0 = max(x0, lx0 + (-lx0) % k, 0, mx0 + (-mx0) % k), max(y0, ly0 + (-ly0) % k, 0, my0 + (-my0) % k)
        x1, y1 = min(x1, lx1 // k * k, bw // k * k, mx1 // k * k), min(y1, ly1 // k * k, bh // k * k, my1 // k * k)
        if x1 - x0 < 2 * k or y1 - y0 < 2 * k:
            return None
        size, small = (x1 - x0, y1 - y0), ((x1 - x0) // k, (y1 - y0) // k)
        mx, my = maps.at(x0, y0, x1, y1)
        q = cv2.merge(
            [
                cv2.resize(mx, small, interpolation=cv2.INTER_AREA) - np.float32(self.x0),
                cv2.resize(my, small, interpolation=cv2.INTER_AREA) - np.float32(self.y0),
            ]
        )
        dx, dy = cv2.split(cv2.subtract(_iterate(acc, np.asarray(q, np.float32)), q))
        sharp_box = None
        if sharp is not None:
            sx0, sy0, sx1, sy1 = max(sharp[0], x0), max(sharp[1], y0), min(sharp[2], x1), min(sharp[3], y1)
            if sx1 > sx0 and sy1 > sy0:
                smx, smy = maps.at(sx0, sy0, sx1, sy1)
                qs = cv2.merge([smx - np.float32(self.x0), smy - np.float32(self.y0)])
                sharp_box = (sx0, sy0, sx1, sy1, _iterate(acc, np.asarray(qs, np.float32)))
        cv2.add(mx, cv2.resize(dx, size, interpolation=cv2.INTER_LINEAR), dst=mx)
        cv2.add(my, cv2.resize(dy, size, interpolation=cv2.INTER_LINEAR), dst=my)
        if sharp_box is not None:
            sx0, sy0, sx1, sy1, sol = sharp_box
            fx, fy = cv2.split(sol)
            smx, smy = maps.at(sx0, sy0, sx1, sy1)
            smx[:] = fx + np.float32(self.x0)
            smy[:] = fy + np.float32(self.y0)
        return x0, y0, x1, y1


def _iterate(acc: F32, q: F32) -> F32:
    """Fixed point s = q - F(s): the source point that the forward fields move onto q."""
    s = q
    for _ in range(ITERATIONS):
        f = cv2.remap(acc, s, _NO_MAP, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        s = np.asarray(cv2.subtract(q, f), np.float32)
    return s
