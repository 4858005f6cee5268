"""Warp fields: each field's displacement of the mesh, drawn onto the frame, and the checks that none folds."""

from __future__ import annotations

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, I64, smoothstep
from liveavatar.render.landmarks import BROWS, EYES, N_LANDMARKS, UPPER_INNER, mouth_width
from liveavatar.render.mesh import Mesh
from liveavatar.render.pack import AvatarPack, Field

FOLD_MIXES: tuple[dict[str, float], ...] = (
    {"jaw_open": 1.0, "lips_wide": 0.5},
    {"jaw_open": 0.6, "lips_round": 1.0},
    {"jaw_open": 1.0, "smile_up": 1.0},
    {"jaw_open": 1.0, "smile_down": 1.0},
    {"lips_wide": 1.0, "smile_up": 1.0},
    {"lips_round": 1.0, "smile_down": 1.0},
    {"lower_lip_tuck": 1.0, "smile_up": 1.0},
    {"brows_up": 1.0, "smile_up": 1.0},
)
"""Mixes of fields, at strengths lip-sync and expressions reach together, that must not fold."""


def field_from_vertices(raster: tuple[I64, I64, I64, F64], mesh: Mesh, d: F64) -> Field:
    """Interpolate per-vertex values over the mesh into a field on the box where they are non-zero."""
    ys, xs, t, bary = raster
    full = np.zeros((int(ys.max()) + 1, int(xs.max()) + 1, d.shape[1]), np.float32)
    full[ys, xs] = np.einsum("nk,nkc->nc", bary, d[mesh.tris[t]])
    return crop_field(full)


def crop_field(full: F32) -> Field:
    """Keep the box of a full-frame field where it moves pixels visibly."""
    big = np.abs(full).max(2) > 0.2  # a fifth of a pixel is invisible; a smaller box is faster
    if not big.any():
        return Field(0, 0, np.zeros((1, 1, full.shape[2]), np.float16))
    rows, cols = np.nonzero(big.any(1))[0], np.nonzero(big.any(0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Field(x0, y0, full[y0:y1, x0:x1].astype(np.float16))


def basis(name: str, m: Mesh) -> F64:
    """Per-vertex displacement (pixels) of one field at full strength."""
    if name.startswith("brows"):
        return m.with_rings(_brows(m, up=name == "brows_up"))
    u, vr, lower = m.u, m.v_rel, m.side > 0
    au, sgn = np.abs(u), np.sign(u)
    beyond = np.maximum(au - 0.5, 0.0)
    c = m.lens()
    inward = np.minimum(au / 0.5, 1.0)
    du, dv = np.zeros_like(u), np.zeros_like(u)
    if name == "jaw_open":
        jaw, kappa = 0.36, 0.35
        lateral = 0.15 + 0.85 * np.exp(-((np.maximum(au - 0.45, 0) / 0.45) ** 2))
        lip = kappa + (1 - kappa) * c
        dv = np.where(
            lower,
            jaw * lateral * (lip + (1 - lip) * smoothstep(0.0, 0.7, vr)),
            jaw * (-0.08 * c * np.exp(-((vr / 0.3) ** 2)) + kappa * lateral * (1 - c) * np.exp(-((vr / 0.45) ** 2))),
        )
        du = -0.04 * sgn * inward * np.exp(-((beyond / 0.4) ** 2) - (vr / 0.35) ** 2)
    elif name == "lips_wide":
        spread = inward * np.exp(-((beyond / 0.7) ** 2))
        du = 0.10 * sgn * spread * np.exp(-((vr / 0.5) ** 2))
        lift = -0.02 * spread * np.exp(-((vr / 0.5) ** 2))
        dv = lift + np.where(lower, 0.06 * c * np.exp(-((vr / 0.35) ** 2)), -0.045 * c * np.exp(-((vr / 0.25) ** 2)))
    elif name == "lips_round":
        # a rounder, narrower opening than the jaw's lens
        cr = np.cos(np.pi / 2 * np.clip(au / (0.8 * m.u_in), 0, 1)) ** 0.6
        near = np.exp(-((beyond / 0.6) ** 2) - (vr / 0.55) ** 2)
        du = -0.15 * sgn * inward * near
        # pursed lips lose the photo's smile (or droop): the corners come level with the middle
        level = np.interp(0.0, m.seam_u, m.seam_v) - np.interp(np.clip(u, -m.u_in, m.u_in), m.seam_u, m.seam_v)
        up_out = np.exp(-((np.maximum(-vr - m.t_up, 0) / 0.3) ** 2))
        lo_out = np.exp(-((np.maximum(vr - m.t_lo, 0) / 0.4) ** 2))
        dv = 0.6 * level * near + np.where(
            lower,
            cr * (0.075 + 0.035 * np.clip(vr / m.t_lo, 0, 1)) * lo_out,
            -cr * (0.045 + 0.035 * np.clip(-vr / m.t_up, 0, 1)) * up_out,
        )
    elif name == "lips_closed":
        dv = np.where(
            lower,
            -0.035 * c * np.clip(vr / m.t_lo, 0, 1) * np.exp(-((np.maximum(vr - m.t_lo, 0) / 0.3) ** 2)),
            0.03 * c * np.clip(-vr / m.t_up, 0, 1) * np.exp(-((np.maximum(-vr - m.t_up, 0) / 0.25) ** 2)),
        )
    elif name == "lower_lip_tuck":
        roll = 0.55 * m.t_lo * m.lens(0.7)
        dv = np.where(
            lower,
            -roll * np.clip(vr / m.t_lo, 0, 1) * np.exp(-((np.maximum(vr - m.t_lo, 0) / 0.35) ** 2)),
            -0.05 * c * np.exp(-((vr / 0.3) ** 2)),
        )
    elif name in ("smile_up", "smile_down"):
        corner = inward**1.5 * np.exp(-((beyond / 0.6) ** 2) - (vr / 0.45) ** 2)
        if name == "smile_up":
            du = 0.07 * sgn * corner
            cheek = np.exp(-(((au - 0.75) / 0.35) ** 2) - ((vr + 0.45) / 0.4) ** 2)
            dv = -0.09 * corner - 0.035 * cheek
        else:
            du = -0.015 * sgn * corner
            dv = 0.07 * corner - 0.02 * c * np.exp(-((vr / np.where(lower, 0.5, 0.2)) ** 2))
    else:
        raise ValueError(f"unknown field {name}")
    d = m.to_xy(du, dv)
    d[N_LANDMARKS:] = 0.0
    return m.with_rings(d)


def _brows(m: Mesh, up: bool) -> F64:
    """Brows up (and forehead), or down and together; the eyes and lids below them stay put."""
    xy = m.verts
    ex = xy[263] - xy[33]
    ex = ex / np.linalg.norm(ex)
    ey = np.array([-ex[1], ex[0]])
    origin = (xy[33] + xy[263]) / 2
    x, y = (xy - origin) @ ex, (xy - origin) @ ey
    fh = m.face_h
    mid_x = float((xy[168] - origin) @ ex)
    out = np.zeros((len(xy), 2))
    for k in range(2):
        bx, by = x[list(BROWS[k][5:])], y[list(BROWS[k][5:])]
        lx, ly = x[list(EYES[k][0])], y[list(EYES[k][0])]
        ob, ol = np.argsort(bx), np.argsort(lx)
        y_brow = np.interp(x, bx[ob], by[ob])
        y_lid = np.interp(x, lx[ol], ly[ol])
        outside = np.maximum(np.maximum(bx.min() - x, x - bx.max()), 0.0)
        lateral = np.exp(-((outside / (0.12 * fh)) ** 2))
        between = np.clip((y_lid - y) / np.maximum(y_lid - y_brow, 1.0), 0.0, 1.0)
        floor = 0.35 if up else 0.15
        above = floor + (1 - floor) * np.exp(-(((y_brow - y) / (0.15 * fh)) ** 2))
        f = np.where(y >= y_brow, between, above) * lateral
        f[list(EYES[k][0]) + list(EYES[k][1])] = 0.0
        inner_x = bx[np.argmin(np.abs(bx - mid_x))]
        inner = np.exp(-(((x - inner_x) / (0.1 * fh)) ** 2))
        if up:
            dy, dx = -0.04 * fh * f, np.zeros_like(f)
        else:
            dy = 0.032 * fh * f * (0.6 + 0.4 * inner)
            dx = -np.sign(x - mid_x) * 0.02 * fh * f * inner
        stronger = np.abs(dy) > np.abs(out @ ey)
        d = dx[:, None] * ex + dy[:, None] * ey
        out[stronger] = d[stronger]
    out[[i for eye in EYES for c in eye for i in c]] = 0.0
    out[N_LANDMARKS:] = 0.0
    return out


def min_area_ratio(mesh: Mesh, deltas: dict[str, F64], depth: F64) -> float:
    """Smallest area ratio of any triangle over single fields, likely mixes and head turns."""
    p0, tris = mesh.verts, mesh.tris

    def areas(p: F64) -> F64:
        a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
        return np.asarray(np.cross(b - a, c - a), dtype=np.float64)

    a0 = areas(p0)
    solid = np.abs(a0) > 6.0  # slivers at the mouth corners may flip unseen
    strip = (mesh.kind == mesh.MOUTH) & ~solid
    opening = np.sign(areas(p0 + deltas["jaw_open"]))
    mixes = [deltas[k] for k in deltas]
    mixes += [sum((w * deltas[k] for k, w in mix.items()), np.zeros_like(p0)) for mix in FOLD_MIXES]
    turn = np.radians(8.0) * depth
    zero = np.zeros_like(turn)
    mixes += [np.stack([s * turn, zero], 1) for s in (-1, 1)] + [np.stack([zero, s * turn], 1) for s in (-1, 1)]
    worst = 1.0
    for d in mixes:
        a1 = areas(p0 + d)
        worst = min(worst, float(np.min(a1[solid] / a0[solid])))
        if np.any(a1[strip] * opening[strip] < -0.5):
            worst = min(worst, -1.0)
    return worst


def check_folds(pack: AvatarPack) -> float:
    """Smallest Jacobian determinant of the pack's fields, singly and mixed, away from where the lips part."""
    w, h = pack.size
    seam = np.zeros((h, w), np.uint8)
    cv2.polylines(
        seam, [np.round(pack.landmarks[list(UPPER_INNER), :2] * 16).astype(np.int32)], False, (1,), 1, cv2.LINE_8, 4
    )
    lm = pack.landmarks
    corner = max(2.0, 0.06 * mouth_width(lm))
    for i in (61, 78, 291, 308):
        cv2.circle(
            seam, (int(round(lm[i, 0] * 16)), int(round(lm[i, 1] * 16))), int(corner * 16), (1,), -1, cv2.LINE_8, 4
        )
    near_lips = np.asarray(cv2.dilate(seam, np.ones((5, 5), np.uint8))) > 0

    def full(name: str) -> F32:
        f = pack.fields[name]
        out = np.zeros((h, w, 2), np.float32)
        fh, fw = f.data.shape[:2]
        out[f.y : f.y + fh, f.x : f.x + fw] = f.data
        return out

    worst = 1.0
    for mix in [{n: 1.0} for n in pack.fields] + list(FOLD_MIXES):
        d = sum((k * full(n) for n, k in mix.items()), np.zeros((h, w, 2), np.float32))
        gy_x, gx_x = np.gradient(d[..., 0])
        gy_y, gx_y = np.gradient(d[..., 1])
        det = (1 + gx_x) * (1 + gy_y) - gy_x * gx_y
        worst = min(worst, float(det[~near_lips].min()))
    return worst
