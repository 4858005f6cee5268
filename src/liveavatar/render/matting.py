"""Separate the person from the photo's background: a soft mask and edge colours free of the old background."""

from __future__ import annotations

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, U8
from liveavatar.render.landmarks import OVAL, face_height


def person_mask(img: U8, lm: F64) -> U8:
    """Selfie segmentation, only the part connected to the face, edges refined on the photo."""
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        soft = seg.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).segmentation_mask.astype(np.float32)
    face = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, np.asarray(cv2.convexHull(lm[list(OVAL), :2].astype(np.int32)), np.int32), (1,))
    hard = ((soft > 0.5) | (face > 0)).astype(np.uint8)
    _, labels = cv2.connectedComponents(hard, connectivity=8)
    nose = lm[1, :2].astype(int)
    keep = (labels == labels[nose[1], nose[0]]).astype(np.uint8)
    keep = cv2.dilate(keep, np.ones((7, 7), np.uint8))
    refined = _guided_filter(img.astype(np.float32) / 255.0, soft * keep, 6, 1e-3)
    # a touch inside the coarse edge; below the head (clothes, not hair) the edge is made crisp
    chin = float(lm[152, 1]) + 0.3 * face_height(lm)
    rows = np.arange(img.shape[0], dtype=np.float32)[:, None]
    steep = 1.3 + 1.7 * np.clip((rows - chin) / 40.0, 0.0, 1.0)
    refined = np.clip((refined - 0.55) * steep + 0.5, 0.0, 1.0) * keep
    refined = np.maximum(refined, cv2.GaussianBlur(face.astype(np.float32), (0, 0), 2.0))
    return (refined * 255.0 + 0.5).astype(np.uint8)


def _guided_filter(guide: F32, src: F32, r: int, eps: float) -> F32:
    """Colour guided filter (He et al.): the mask's edges follow the photo's edges."""

    def box(x: F32) -> F32:
        return np.asarray(cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1)), np.float32)

    mean_i, mean_p = box(guide), box(src)
    cov = box(guide * src[..., None]) - mean_i * mean_p[..., None]
    var = np.empty((*src.shape, 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            var[..., i, j] = var[..., j, i] = box(guide[..., i] * guide[..., j]) - mean_i[..., i] * mean_i[..., j]
    var += eps * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var, cov[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(-1)
    return np.asarray((box(a) * guide).sum(-1) + box(b), dtype=np.float32)


def decontaminate(img: U8, alpha: U8) -> U8:
    """Person colours at the mask edge: the old background un-mixed, or nearby person colours."""
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    px = img.astype(np.float32)

    def local_mean(weight: F32, sigma: float) -> tuple[F32, F32]:
        num = cv2.GaussianBlur(px * weight[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(weight, (0, 0), sigma)[..., None]
        return np.asarray(num / np.maximum(den, 1e-4), np.float32), np.asarray(den, np.float32)

    back, back_w = local_mean((a[..., 0] < 0.04).astype(np.float32), 6.0)
    near, near_w = local_mean((a[..., 0] > 0.96).astype(np.float32), 4.0)
    unmixed = np.clip((px - (1 - a) * back) / np.maximum(a, 0.05), 0, 255)
    unmixed = np.where(back_w > 1e-3, unmixed, px)
    edge = np.where(near_w > 1e-3, near, px)
    w = np.clip((a - 0.25) / 0.35, 0.0, 1.0)
    fg = w * unmixed + (1 - w) * edge
    keep = np.clip((a - 0.9) / 0.08, 0.0, 1.0)
    return np.asarray(np.clip(keep * px + (1 - keep) * fg + 0.5, 0, 255), np.uint8)
