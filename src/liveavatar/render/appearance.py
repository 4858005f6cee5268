"""The face's look at rest: mouth closed, the upper teeth, closed eyelids, mouth colours, glasses."""

from __future__ import annotations

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, U8, smoothstep
from liveavatar.render.fields import basis
from liveavatar.render.landmarks import (
    EYES,
    IRIS,
    LOWER_INNER,
    LOWER_OUTER,
    N_LANDMARKS,
    SEMI_INNER,
    UPPER_INNER,
    UPPER_OUTER,
)
from liveavatar.render.mesh import Mesh
from liveavatar.render.pack import TEETH_SPAN, EyeLid


def rest_face(img: U8, lm: F64) -> tuple[U8, F64, U8 | None]:
    """Close a parted mouth (lips overlapping slightly, nothing at the corners) and soften a broad smile."""
    m = Mesh(lm)
    up, lo = np.array(UPPER_INNER), np.array(LOWER_INNER)
    gap = (m.v[lo] - m.v[up]) * m.mw
    smile = float((m.v[13] + m.v[14]) / 2)
    if gap.max() < 1.0 and smile < 0.06:
        return img, _snap_seam(img, lm, m), None
    c_seam = m.lens()[up]
    meet = m.v[up] + 0.45 * (m.v[lo] - m.v[up]) + 0.02 * c_seam
    share_up = np.interp(m.u, m.u[up], meet - m.v[up])
    share_lo = np.interp(m.u, m.u[up], m.v[lo] - meet + 0.02 * c_seam)
    vr, lower = m.v_rel, m.side > 0
    dv = np.where(
        lower,
        -share_lo * np.exp(-((np.maximum(vr - m.t_lo, 0) / 0.35) ** 2)),
        share_up * np.exp(-((np.maximum(-vr - m.t_up, 0) / 0.3) ** 2)),
    )
    delta = m.to_xy(np.zeros_like(dv), dv)
    delta[N_LANDMARKS:] = 0.0
    delta = m.with_rings(delta)
    if smile > 0.06:
        delta -= min((smile - 0.06) / 0.09, 1.0) * 0.8 * basis("smile_up", m)
    out = m.warp(img, delta)
    new = lm.copy()
    new[:, :2] += delta[:N_LANDMARKS]
    new[lo, :2] = new[up, :2]
    teeth = _photo_teeth(img, lm, new) if gap.max() > 0.05 * m.mw else None
    return out, new, teeth


def _snap_seam(img: U8, lm: F64, m: Mesh) -> F64:
    """Put a closed mouth's seam on the dark line between the lips (MediaPipe may sit a pixel or two off)."""
    gray = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), (3, 3), 0)
    up, lo = np.array(UPPER_INNER), np.array(LOWER_INNER)
    mid = (lm[up, :2] + lm[lo, :2]) / 2
    reach = max(2.0, 0.04 * m.mw)
    steps = np.arange(-reach, reach + 0.01, 0.5)
    pts = mid[:, None, :] + steps[None, :, None] * m.ev
    prof = cv2.remap(gray, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    # stay well between the next rings of lip landmarks, or the lips' triangles would flip
    lo_lim = (lm[list(SEMI_INNER[0]), :2] - mid) @ m.ev * 0.6
    hi_lim = (lm[list(SEMI_INNER[1]), :2] - mid) @ m.ev * 0.6
    allowed = (steps[None, :] >= np.minimum(lo_lim, 0)[:, None]) & (steps[None, :] <= np.maximum(hi_lim, 0)[:, None])
    cost = np.where(allowed, prof + 0.5 * np.abs(steps)[None, :], np.inf)
    best = steps[np.argmin(cost, axis=1)]
    best[0] = best[-1] = 0.0
    best[1:-1] = np.convolve(best, [0.25, 0.5, 0.25], mode="same")[1:-1]
    out = lm.copy()
    out[up, :2] = out[lo, :2] = mid + best[:, None] * m.ev
    return out


TEETH_SIZE = (24, 96)
"""Teeth texture rows x columns; rows span TEETH_SPAN below the seam, columns the mouth's width."""

TOOTH_EDGES = np.array([0.0, 0.125, 0.215, 0.29, 0.35, 0.4, 0.45, 0.5])
"""Where one upper tooth meets the next, |u| in mouth widths from the midline (centrals, laterals, canines,
premolars, molars; narrower outward as the arch turns away)."""
_TOOTH_TIP = np.array([0.085, 0.074, 0.078, 0.066, 0.06, 0.055, 0.05])
"""Each tooth's length below the seam, mouth widths (centrals longest, the canine's point a little lower)."""
_TOOTH_TINT = np.array([1.0, 0.97, 0.94, 0.95, 0.93, 0.92, 0.92])
"""Each tooth's brightness (the canines a little yellower and darker)."""


def _teeth_grid(m: Mesh, seam: tuple[F64, F64]) -> tuple[F64, F64, F64]:
    """Mouth-frame (u, v) of every texel of the teeth texture, for a seam given as (u, v) samples."""
    rows, cols = TEETH_SIZE
    u = np.linspace(-0.5, 0.5, cols)[None, :].repeat(rows, 0)
    order = np.argsort(seam[0])
    v_seam = np.interp(u, seam[0][order], seam[1][order])
    v = v_seam + np.linspace(TEETH_SPAN[0], TEETH_SPAN[1], rows)[:, None]
    return u, v, v_seam


def _photo_teeth(img: U8, lm: F64, rest: F64) -> U8:
    """The photo's own teeth, resampled below the rest seam (the hidden top edge repeats the top row)."""
    m = Mesh(lm)
    up, lo = np.array(UPPER_INNER), np.array(LOWER_INNER)
    rel = rest[up, :2] - m.centre
    u, v, _ = _teeth_grid(m, (rel @ m.eu / m.mw, rel @ m.ev / m.mw))
    order = np.argsort(m.u[up])
    v_top = np.interp(u, m.u[up][order], m.v[up][order])
    v_bot = np.interp(u, m.u[up][order], m.v[lo][order])
    v_src = np.maximum(v, v_top + 0.6 / m.mw)
    p = m.centre + (u[..., None] * m.eu + v_src[..., None] * m.ev) * m.mw
    bgr = cv2.remap(img, p[..., 0].astype(np.float32), p[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    a = np.clip((v_bot - v) * m.mw - 0.8, 0.0, 1.0) * (np.abs(u) < m.u_in)
    return np.dstack([bgr, (a * 255).astype(np.uint8)])


def _sclera_color(img: U8, lm: F64) -> F64:
    """Colour of the whites of the eyes (pure white looks blue-grey next to warm skin)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    for (upper, lower), iris in zip(EYES, IRIS, strict=True):
        cv2.fillPoly(mask, [np.round(lm[list(upper) + list(lower[::-1]), :2]).astype(np.int32)], (1,))
        r = np.linalg.norm(lm[list(iris[1:]), :2] - lm[iris[0], :2], axis=1).mean() * 1.15
        centre = (int(round(lm[iris[0], 0])), int(round(lm[iris[0], 1])))
        cv2.circle(mask, centre, int(np.ceil(r)), (0,), -1)
    px = img[mask > 0]
    fallback = np.array([165.0, 200.0, 222.0])  # warm ivory, BGR
    if len(px) < 12:
        return fallback
    hsv = cv2.cvtColor(px[None], cv2.COLOR_BGR2HSV)[0].astype(np.float64)
    pick = (hsv[:, 1] <= np.percentile(hsv[:, 1], 40)) & (hsv[:, 2] >= np.percentile(hsv[:, 2], 50))
    sample = np.median(px[pick].astype(np.float64), axis=0) * 1.05
    sat = float(np.median(hsv[pick, 1])) / 255
    val = float(sample.max())
    # reddened or shadowed eyes (or glasses) say little about the teeth: lean on the fallback
    trust = float(np.clip((0.35 - sat) / 0.15, 0, 1) * np.clip((val - 120) / 50, 0, 1))
    return np.asarray(trust * sample + (1 - trust) * fallback, dtype=np.float64)


def synthetic_teeth(img: U8, lm: F64) -> U8:
    """Upper teeth coloured from the eye whites, drawn tooth by tooth so the band does not read as one strip.

    Each tooth is a rounded blade: lighter in its middle than at its sides (it is convex), its incisal corners
    rounded so a small dark notch opens between neighbours at the tips, a faint shadow line where two teeth
    touch, a greyer translucent tip and a warmer neck under the lip. Darker toward the mouth's corners.
    """
    m = Mesh(lm)
    up = np.array(UPPER_INNER)
    u, v, v_seam = _teeth_grid(m, (m.u[up], m.v[up]))
    below = (v - v_seam) * m.mw
    au = np.abs(u)
    k = np.clip(np.searchsorted(TOOTH_EDGES, au, side="right") - 1, 0, len(_TOOTH_TIP) - 1)
    width = TOOTH_EDGES[k + 1] - TOOTH_EDGES[k]
    s = np.clip((au - TOOTH_EDGES[k]) / width, 0.0, 1.0)  # 0 at the tooth's midline side, 1 at its outer side
    across = 2 * s - 1  # -1..1 across one tooth
    # px to the nearest neighbour (the midline is a neighbour of both centrals)
    to_gap = np.minimum(s, 1 - s) * width * m.mw
    corner = 0.22 * width * m.mw
    rounding = corner - np.sqrt(np.maximum(corner**2 - np.maximum(corner - to_gap, 0) ** 2, 0))
    tip = _TOOTH_TIP[k] * m.mw - rounding
    tip -= np.where(k == 2, 0.25 * width * m.mw * np.abs(across), 0.0)  # the canine comes to a point
    t = np.clip(below / np.maximum(tip, 1e-6), 0, 1)  # 0 at the seam, 1 at the tip
    shade = (1 - 0.5 * np.clip(au / 0.42, 0, 1) ** 2) * _TOOTH_TINT[k]
    shade *= 1 - 0.1 * across**2  # convex: the sides turn away from the light
    shade *= 1 - 0.32 * np.exp(-((to_gap / max(0.45, 0.006 * m.mw)) ** 2)) * (0.55 + 0.45 * t)  # contact line
    shade *= 1 - 0.12 * t**4  # the tip turns back into the mouth's shadow
    base = _sclera_color(img, lm)
    color = base[None, None, :] * shade[..., None]
    # translucent incisal edge (greyer, a touch blue) and a warmer neck (yellower) under the lip
    edge = np.clip((t - 0.72) / 0.28, 0, 1)[..., None] * 0.35
    color = color + (color.mean(-1, keepdims=True) * np.array([1.02, 0.96, 0.9]) - color) * edge
    neck = np.clip(1 - t / 0.3, 0, 1)[..., None] * 0.12
    color = color + (color * np.array([0.82, 0.97, 1.03]) - color) * neck
    color = np.clip(color, 0, 255)
    a = np.clip(tip - below + 0.5, 0.0, 1.0) * (1 - smoothstep(0.26, 0.46, au))
    return np.dstack([color, a * 255]).round().astype(np.uint8)


def wears_glasses(img: U8, lm: F64) -> bool:
    """A strong horizontal edge across the top of the nose (a glasses bridge), far above skin texture."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    edges = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    a, b = lm[9, :2], lm[197, :2]
    pts = (a + (b - a) * np.linspace(0, 1, 40)[:, None]).astype(np.float32)
    bridge = float(cv2.remap(edges, pts[:, 0:1], pts[:, 1:2], cv2.INTER_LINEAR).max())
    cx, cy = (int(v) for v in lm[50, :2])
    cheek = float(edges[cy - 5 : cy + 5, cx - 5 : cx + 5].mean()) + 1.0
    return bridge > 120.0 and bridge / cheek > 6.0


def mouth_colors(img: U8, lm: F64) -> F32:
    """Interior (dark red-brown from the lip colour), tongue and lip colours, BGR rows."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[list(UPPER_OUTER) + list(LOWER_OUTER[::-1]), :2]).astype(np.int32)], (1,))
    lip = np.median(img[mask > 0].reshape(-1, 3), axis=0).astype(np.float64)
    interior = lip * np.array([0.11, 0.11, 0.22])
    tongue = lip * np.array([0.42, 0.42, 0.68])
    return np.asarray(np.stack([interior, tongue, lip]), np.float32)


def eyelid(img: U8, lm: F64, k: int) -> EyeLid:
    """Closed-lid patch for a blink: the eye opening painted over with lid skin, its texture from above."""
    upper, lower = lm[list(EYES[k][0]), :2], lm[list(EYES[k][1]), :2]
    eye_h = float(np.max(lower[:, 1] - upper[:, 1]))
    x0 = int(np.floor(upper[:, 0].min())) - 3
    x1 = int(np.ceil(upper[:, 0].max())) + 4
    y0 = int(np.floor(upper[:, 1].min() - 0.4 * eye_h)) - 4
    y1 = int(np.ceil(lower[:, 1].max())) + 3
    pad = int(np.ceil(eye_h)) + 8
    crop = img[y0 - pad : y1 + pad, x0 - pad : x1 + pad]
    band = _lash_band(img, upper)
    hole = np.zeros(crop.shape[:2], np.uint8)
    poly = np.vstack([upper - [0.0, band - 1.0], lower[::-1]]) - [x0 - pad, y0 - pad]
    cv2.fillPoly(hole, [np.round(poly * 16).astype(np.int32)], (255,), cv2.LINE_8, 4)
    hole = np.asarray(cv2.dilate(hole, np.ones((3, 3), np.uint8)), np.uint8)
    skin = cv2.GaussianBlur(cv2.inpaint(crop, hole, 5, cv2.INPAINT_TELEA), (3, 3), 0).astype(np.float32)
    # the lid skin's own grain, borrowed from just above the eye, so the patch is not a flat sticker
    xs = np.arange(crop.shape[1], dtype=np.float64) + x0 - pad
    top = np.interp(xs, upper[:, 0], upper[:, 1])
    bot = np.interp(xs, lower[:, 0], lower[:, 1])
    c = crop.astype(np.float32)
    grain = c - cv2.GaussianBlur(c, (0, 0), 1.5)
    gy, gx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]].astype(np.float32)
    shift = (bot - top + band + 1.5).astype(np.float32)[None, :]
    borrowed = cv2.remap(grain, gx, np.maximum(gy - shift, 0), cv2.INTER_LINEAR)
    skin += np.clip(1.1 * borrowed, -12, 12) * (hole[..., None] > 0)  # grain, not edges
    lid_f = skin[pad:-pad, pad:-pad]
    line = np.zeros(crop.shape[:2], np.uint8)
    cv2.polylines(line, [np.round((upper - [x0 - pad, y0 - pad]) * 16).astype(np.int32)], False, (1,), 2, cv2.LINE_8, 4)
    lashes = crop[line > 0].astype(np.float64)
    dark = lashes[lashes.sum(1) <= np.percentile(lashes.sum(1), 30)] if len(lashes) else np.zeros((1, 3))
    cols = slice(pad, crop.shape[1] - pad)
    top, bot, xs = top[cols], bot[cols], xs[cols]
    closed = bot - 0.12 * (bot - top)
    outer_end = upper[0, 0] if k == 0 else upper[-1, 0]
    t_outer = 1 - np.abs(xs - outer_end) / max(float(np.ptp(upper[:, 0])), 1.0)
    shading = _lid_shading(len(lid_f), np.asarray(top - y0, np.float64), closed - y0, xs, upper)[..., None]
    lid = np.clip(lid_f * shading * _LID_TINT, 0, 255).astype(np.uint8)
    ends = np.clip(np.minimum(xs - upper[:, 0].min(), upper[:, 0].max() - xs) / 2.0, 0, 1)
    return EyeLid(
        x0,
        y0,
        np.ascontiguousarray(lid),
        (top - y0).astype(np.float32),
        (closed - y0).astype(np.float32),
        ((0.65 + 0.35 * t_outer) * ends).astype(np.float32),
        (np.median(dark, axis=0) * 0.8).astype(np.float32),
        band,
    )


_LID_TINT = np.array([0.96, 0.98, 1.0], np.float32)
"""A closed lid's thin skin shows a little more blood than the brow's: slightly warmer (BGR factors)."""


def _lid_shading(rows: int, top: F64, closed: F64, xs: F64, upper: F64) -> F32:
    """Brightness of a closed lid over the eyeball (rows x columns of the lid patch, about 0.8..1.0).

    The lid is a dome: brightest a third of the way down from the open lid's line, where it bulges over the
    cornea; darker down toward the lash line, where it turns under, and toward both corners, where it turns
    back into the socket. Inpainted skin alone is flat, and a flat lid is what gives a photo blink away.
    """
    y = np.arange(rows, dtype=np.float64)[:, None]
    t = (y - top[None, :]) / np.maximum(closed - top, 1.0)[None, :]
    x0, x1 = float(upper[:, 0].min()), float(upper[:, 0].max())
    c = np.clip((xs - (x0 + x1) / 2) / max((x1 - x0) / 2, 1.0), -1.0, 1.0)[None, :]
    dome = 0.91 + 0.07 * np.exp(-(((t - 0.35) / 0.4) ** 2))
    turn_under = 1 - 0.1 * np.clip(t, 0, 1) ** 2.5
    corners = 1 - 0.09 * c**4
    return np.asarray(dome * turn_under * corners, np.float32)


def _lash_band(img: U8, upper: F64) -> float:
    """How far (pixels) the dark upper lash line reaches above the lid's edge."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    xs = np.linspace(upper[2, 0], upper[-3, 0], 12)
    ys = np.interp(xs, upper[:, 0], upper[:, 1])
    offsets = np.arange(0.0, 10.0, 0.5)
    mx = np.repeat(xs[None, :], len(offsets), 0).astype(np.float32)
    my = (ys[None, :] - offsets[:, None]).astype(np.float32)
    prof = np.median(cv2.remap(gray, mx, my, cv2.INTER_LINEAR), axis=1)
    skin, darkest = float(prof[-4:].mean()), float(prof.min())
    recovered = np.nonzero(prof >= skin - 0.25 * (skin - darkest))[0]
    recovered = recovered[recovered >= int(np.argmin(prof))]
    first = float(offsets[recovered[0]]) if len(recovered) else 3.0
    return float(np.clip(first + 1.0, 2.5, 6.0))
