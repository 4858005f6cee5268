"""The face mesh: MediaPipe's triangles with the mouth and eyes bridged, anchor rings, and the mouth's frame."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, I64, U8
from liveavatar.render.landmarks import (
    EYES,
    LOWER_INNER,
    LOWER_LIP,
    LOWER_OUTER,
    N_LANDMARKS,
    OVAL,
    UPPER_INNER,
    UPPER_LIP,
    UPPER_OUTER,
    face_height,
)

RINGS = ((1.2, 0.6), (1.45, 0.25), (1.8, 0.0))
"""Anchor rings outside the face: (scale of the face oval, share of the oval's displacement)."""


@lru_cache(maxsize=1)
def _mp_triangles() -> tuple[tuple[int, int, int], ...]:
    """MediaPipe's face triangles, recovered from its tesselation edges (mouth and eyes are holes)."""
    import mediapipe as mp

    edges = {(min(a, b), max(a, b)) for a, b in mp.solutions.face_mesh.FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    uses = Counter(e for t in tris for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))
    # a triangle whose three edges all belong to a third face is a cycle, not a face
    return tuple(
        (t[0], t[1], t[2]) for t in tris if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))
    )


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles bridging an opening between two contours that share their end points."""
    out = []
    for i in range(len(upper) - 1):
        for t in ((upper[i], upper[i + 1], lower[i + 1]), (upper[i], lower[i + 1], lower[i])):
            if len(set(t)) == 3:
                out.append(t)
    return out


class Mesh:
    """Face triangulation with the mouth and eyes bridged by strips and anchor rings outside the face."""

    MP, MOUTH, EYE, RING = 0, 1, 2, 3

    def __init__(self, lm: F64) -> None:
        self.lm = lm
        xy = lm[:, :2]
        oval = np.array(OVAL)
        centre = xy[oval].mean(0)
        self.verts: F64 = np.vstack([xy] + [centre + s * (xy[oval] - centre) for s, _ in RINGS])
        groups: list[tuple[int, list[tuple[int, int, int]]]] = [
            (self.MP, list(_mp_triangles())),
            (self.MOUTH, _strip(UPPER_INNER, LOWER_INNER)),
            (self.EYE, _strip(*EYES[0]) + _strip(*EYES[1])),
        ]
        ring_tris, prev = [], list(OVAL)
        for k in range(len(RINGS)):
            cur = [N_LANDMARKS + k * len(OVAL) + i for i in range(len(OVAL))]
            for i in range(len(OVAL)):
                j = (i + 1) % len(OVAL)
                ring_tris += [(prev[i], prev[j], cur[j]), (prev[i], cur[j], cur[i])]
            prev = cur
        groups.append((self.RING, ring_tris))
        self.tris: I64 = np.array([t for _, ts in groups for t in ts], dtype=np.int64)
        self.kind = np.concatenate([np.full(len(ts), k) for k, ts in groups])
        # mouth frame: origin between the corners, u along the mouth, v down; units of mouth width
        self.centre = (xy[61] + xy[291]) / 2
        d = xy[291] - xy[61]
        self.mw = float(np.linalg.norm(d))
        self.eu = d / self.mw
        self.ev = np.array([-self.eu[1], self.eu[0]])
        rel = self.verts - self.centre
        self.u, self.v = rel @ self.eu / self.mw, rel @ self.ev / self.mw
        up, lo = np.array(UPPER_INNER), np.array(LOWER_INNER)
        su, sv = self.u[up], (self.v[up] + self.v[lo]) / 2
        order = np.argsort(su)
        self.seam_u, self.seam_v = su[order], sv[order]
        self.u_in = float(max(abs(self.u[78]), abs(self.u[308])))
        self.v_rel = self.v - np.interp(self.u, self.seam_u, self.seam_v)
        side = np.where(self.v_rel < 0, -1.0, 1.0)
        side[list(UPPER_LIP)], side[list(LOWER_LIP)] = -1.0, 1.0
        self.side = side
        self.t_up = np.maximum(-self._interp(UPPER_OUTER), 0.03)
        self.t_lo = np.maximum(self._interp(LOWER_OUTER), 0.03)
        self.face_h = face_height(lm)

    def _interp(self, contour: tuple[int, ...]) -> F64:
        """Signed distance (v units) of a lip contour from the seam, at every vertex's u."""
        idx = np.array(contour)
        order = np.argsort(self.u[idx])
        return np.interp(self.u, self.u[idx][order], self.v_rel[idx][order])

    def lens(self, power: float = 1.0) -> F64:
        """1 at the middle of the mouth, 0 at and beyond its inner corners."""
        t = np.clip(np.abs(self.u) / self.u_in, 0.0, 1.0)
        return np.asarray(np.cos(np.pi / 2 * t) ** power, dtype=np.float64)

    def to_xy(self, du: F64, dv: F64) -> F64:
        """Mouth-frame displacements (mouth widths) to pixels."""
        return np.asarray((du[:, None] * self.eu + dv[:, None] * self.ev) * self.mw, np.float64)

    def with_rings(self, d: F64) -> F64:
        """Anchor rings take a decaying share of the face oval's displacement."""
        out = d.copy()
        for k, (_, share) in enumerate(RINGS):
            lo = N_LANDMARKS + k * len(OVAL)
            out[lo : lo + len(OVAL)] = share * d[list(OVAL)]
        return out

    def depth(self, shape: tuple[int, ...], slope: float = 2.5) -> tuple[F64, F32]:
        """Depth in front of the head's rotation axis (through the ears), per vertex and per pixel."""
        z = self.lm[:, 2]
        d = np.zeros(len(self.verts))
        d[:N_LANDMARKS] = np.maximum((z[234] + z[454]) / 2 - z, 0.0)
        ys, xs, t, bary = self.rasterize(shape)
        img = np.zeros(shape[:2], np.float32)
        img[ys, xs] = np.einsum("nk,nk->n", bary, self.with_rings(d[:, None])[:, 0][self.tris[t]])
        # at most `slope` pixels of depth per pixel: turning the head a few degrees must not fold the steep
        # sides of the face over themselves
        kernel = np.ones((3, 3), np.uint8)
        for _ in range(int(img.max() / slope) + 1):
            img = np.minimum(img, cv2.erode(img, kernel) + slope)
        pts = self.verts.astype(np.float32)
        per_vertex = cv2.remap(img, pts[:, 0:1], pts[:, 1:2], cv2.INTER_LINEAR)[:, 0]
        return per_vertex.astype(np.float64), img

    def rasterize(
        self, shape: tuple[int, ...], moved: F64 | None = None, order: I64 | None = None
    ) -> tuple[I64, I64, I64, F64]:
        """Pixels covered by the (moved) mesh: rows, cols, triangle, barycentric weights (n x 3)."""
        pts = self.verts if moved is None else moved
        idx = np.full(shape[:2], -1, np.int32)
        tri_order = np.arange(len(self.tris)) if order is None else order
        for i in tri_order:
            p = pts[self.tris[i]]
            if abs(np.cross(p[1] - p[0], p[2] - p[0])) < 0.5:
                continue
            cv2.fillConvexPoly(idx, np.round(p * 16).astype(np.int32), (int(i),), cv2.LINE_8, 4)
        ys, xs = np.nonzero(idx >= 0)
        t = idx[ys, xs].astype(np.int64)
        a, b, c = (pts[self.tris[t, k]] for k in range(3))
        v0, v1, q = b - a, c - a, np.stack([xs, ys], 1) - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        l1 = (q[:, 0] * v1[:, 1] - v1[:, 0] * q[:, 1]) / den
        l2 = (v0[:, 0] * q[:, 1] - q[:, 0] * v0[:, 1]) / den
        return ys.astype(np.int64), xs.astype(np.int64), t, np.stack([1 - l1 - l2, l1, l2], 1)

    def warp(self, img: U8, delta: F64) -> U8:
        """Move the mesh's vertices by delta and resample the image (upper lip drawn over the lower)."""
        moved = self.verts + delta
        tri_side = self.side[self.tris].mean(1)
        keep = np.nonzero(self.kind != self.MOUTH)[0]
        order = np.concatenate([keep[tri_side[keep] >= 0], keep[tri_side[keep] < 0]])
        ys, xs, t, bary = self.rasterize(img.shape, moved, order)
        src = np.einsum("nk,nkd->nd", bary, self.verts[self.tris[t]])
        h, w = img.shape[:2]
        mx, my = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mx[ys, xs], my[ys, xs] = src[:, 0], src[:, 1]
        return np.asarray(cv2.remap(img, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT), np.uint8)
