"""Geometry the video-avatar builder and renderer share: the head's pose from landmarks, the mouth patch.

Kept apart from loop.py so that the builder (and so the packs' builder version) does not depend on the renderer.
"""

from __future__ import annotations

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, smoothstep
from liveavatar.render.landmarks import LOWER_OUTER, UPPER_OUTER
from liveavatar.render.pack import MOUTH_FIELDS, AvatarPack

STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 8, 234, 454, 127, 356, 93, 323, 70, 300)
"""Landmarks that move with the skull, not the jaw or lips: the head's pose is fitted to these."""
FEATHER = 0.12
"""Width of the mouth patch's soft edge, in mouth widths."""
MOVES = 0.5
"""Pixels a mouth field must move a pixel by for that pixel to be inside the patch's solid core."""


def mouth_patch(pack: AvatarPack) -> tuple[tuple[int, int, int, int], F32]:
    """The box (x0, y0, x1, y1) of the rest frame that speaking changes, and its feathered mask (0..1)."""
    w, h = pack.size
    fields = [pack.fields[n] for n in MOUTH_FIELDS if n in pack.fields]
    moved = np.zeros((h, w), np.uint8)
    for f in fields:
        fh, fw = f.data.shape[:2]
        mag = np.sqrt((f.data.astype(np.float32) ** 2).sum(-1))
        y0, x0 = max(f.y, 0), max(f.x, 0)
        y1, x1 = min(f.y + fh, h), min(f.x + fw, w)
        sub = (mag[y0 - f.y : y1 - f.y, x0 - f.x : x1 - f.x] > MOVES).astype(np.uint8)
        np.maximum(moved[y0:y1, x0:x1], sub, out=moved[y0:y1, x0:x1])
    lips = pack.landmarks[list(UPPER_OUTER + LOWER_OUTER[::-1]), :2].astype(np.float64)
    cv2.fillPoly(moved, [np.round(lips).astype(np.int32)], (1,))
    mw = float(np.linalg.norm(lips[0] - lips[len(UPPER_OUTER) - 1]))
    feather = max(2.0, FEATHER * mw)
    r = int(np.ceil(feather))
    core = cv2.dilate(moved, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    mask = np.asarray(cv2.GaussianBlur(core.astype(np.float32), (0, 0), feather / 2), np.float32)
    # nothing of the eyes: the clip's own blinks stay; the patch fades in between the lower lids and the nose
    lm = pack.landmarks[:, :2].astype(np.float64)
    across = lm[263] - lm[33]
    down = np.array([-across[1], across[0]]) / np.linalg.norm(across)
    lids = max(float(lm[145] @ down), float(lm[374] @ down))
    nose = float(lm[1] @ down)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = xx * down[0] + yy * down[1]
    mask *= smoothstep(lids + 0.25 * (nose - lids), nose - 0.15 * (nose - lids), depth).astype(np.float32)
    ys, xs = np.nonzero(mask > 1e-3)
    x0, y0 = int(xs.min()), int(ys.min())
    x1, y1 = int(xs.max()) + 1, int(ys.max()) + 1
    return (x0, y0, x1, y1), np.ascontiguousarray(mask[y0:y1, x0:x1], np.float32)


def fit_pose(rest: F64, seen: F64) -> F64:
    """The similarity (2 x 3) taking rest landmarks (STABLE ones) onto where a frame shows them."""
    idx = list(STABLE)
    m, _ = cv2.estimateAffinePartial2D(
        rest[idx, :2].astype(np.float32), seen[idx, :2].astype(np.float32), method=cv2.LMEDS
    )
    if m is None:
        raise ValueError("no pose fits these landmarks")
    return np.asarray(m, np.float64)
