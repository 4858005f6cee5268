"""Build an avatar pack from a portrait: landmarks, person mask, rest face, eyelids and warp fields."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, TEETH_SPAN, AvatarPack, EyeLid, Field

Progress = Callable[[str, float], None]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

SIZE = 512
MIN_FACE_PX = 96
"""Smallest face the builder accepts: forehead landmark to chin, in pixels of the photo."""
MAX_SIDE = 4096
N_LANDMARKS = 478

UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_LIP = (
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    184,
    74,
    73,
    72,
    11,
    302,
    303,
    304,
    408,
    183,
    42,
    41,
    38,
    12,
    268,
    271,
    272,
    407,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
)
LOWER_LIP = (
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    77,
    90,
    180,
    85,
    16,
    315,
    404,
    320,
    307,
    96,
    89,
    179,
    86,
    15,
    316,
    403,
    319,
    325,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
)
SEMI_INNER = ((62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292), (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292))
EYES = (
    ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    ((362, 398, 384, 385, 386, 387, 388, 466, 263), (362, 382, 381, 380, 374, 373, 390, 249, 263)),
)
IRIS = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
BROWS = ((70, 63, 105, 66, 107, 46, 53, 52, 65, 55), (336, 296, 334, 293, 300, 285, 295, 282, 283, 276))
OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
RINGS = ((1.2, 0.6), (1.45, 0.25), (1.8, 0.0))
"""Anchor rings outside the face: (scale of the face oval, share of the oval's displacement)."""


def build_pack(
    image_bgr: np.ndarray[Any, Any],
    *,
    avatar_id: str,
    name: str,
    gender: str = "",
    progress: Progress | None = None,
) -> AvatarPack:
    """Prepare a portrait for animation; raises ParamError for a photo it cannot animate well."""

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            progress(stage, frac)

    img = _check_image(image_bgr)
    report("finding the face", 0.05)
    lm = _detect(img)
    _check_face(lm, img.shape[1], img.shape[0])
    img, lm = _crop(img, lm)
    report("separating the person from the background", 0.35)
    alpha = _person_mask(img, lm)
    img = _decontaminate(img, alpha)
    report("preparing the face", 0.55)
    img, lm, teeth = _rest_face(img, lm)
    report("computing warp fields", 0.7)
    mesh = _Mesh(lm)
    deltas = {name: _basis(name, mesh) for name in (*MOUTH_FIELDS, *FACE_FIELDS)}
    glasses = _wears_glasses(img, lm)
    if glasses:  # the brows sit on the rims: moving them would bend the glasses
        for field_name in FACE_FIELDS:
            deltas[field_name] *= 0.3
    bary = mesh.rasterize(img.shape[:2])
    fields = {name: _field(bary, mesh, d) for name, d in deltas.items()}
    depth_v, depth_img = mesh.depth(img.shape)
    depth = _crop_field(depth_img[..., None])
    report("checking the warp for folds", 0.85)
    min_jac = mesh.fold_check(deltas, depth_v)
    if min_jac <= 0.05:
        raise ProcessingError(f"the warp folds over on this face (min Jacobian {min_jac:.3f})")
    band, head_weight, pivot, shoulder = _head_region(img, lm, alpha, fields, depth)
    n = N_LANDMARKS
    pack = AvatarPack(
        avatar_id=avatar_id,
        name=name,
        gender=gender,
        image=img,
        alpha=alpha,
        landmarks=lm.astype(np.float32),
        band=band,
        head_weight=head_weight,
        pivot=pivot,
        shoulder_row=shoulder,
        depth=depth,
        fields=fields,
        deltas={
            **{k: v[:n].astype(np.float32) for k, v in deltas.items()},
            "depth": depth_v[:n, None].astype(np.float32),
        },
        eyes=[_eyelid(img, lm, i) for i in range(2)],
        teeth=teeth if teeth is not None else _synthetic_teeth(img, lm),
        mouth_colors=_mouth_colors(img, lm),
        meta={"min_jacobian": round(float(min_jac), 4), "photo_teeth": teeth is not None, "glasses": glasses},
    )
    report("done", 1.0)
    return pack


# ---------------------------------------------------------------- input checks


def _check_image(image: np.ndarray[Any, Any]) -> U8:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ParamError("the portrait must be an 8-bit image")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ParamError("the portrait must be a colour (BGR) image")
    h, w = image.shape[:2]
    if min(h, w) < 128:
        raise ParamError(f"the photo is too small ({w}x{h}); use one at least 512 pixels on each side")
    if max(h, w) > MAX_SIDE:
        k = MAX_SIDE / max(h, w)
        image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _detect(img: U8) -> F64:
    faces = _face_meshes(img)
    if not faces and max(img.shape[:2]) <= 2048:
        # a second look at twice the size tells a face too small to use from no face at all
        big = np.asarray(cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC), np.uint8)
        faces = [f / 2.0 for f in _face_meshes(big)]
    if not faces:
        raise ParamError("no face was found in the photo; use a clear, front-facing portrait")
    faces.sort(key=lambda a: -float(np.ptp(a[:, 1])))
    if len(faces) > 1 and np.ptp(faces[1][:, 1]) > 0.6 * np.ptp(faces[0][:, 1]):
        raise ParamError("the photo shows more than one face; use a portrait of one person")
    return faces[0]


def _face_meshes(img: U8) -> list[F64]:
    import mediapipe as mp  # build time only: the renderer never imports it

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=2, refine_landmarks=True, min_detection_confidence=0.5
    ) as mesh:
        res = mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    h, w = img.shape[:2]
    return [
        np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], dtype=np.float64)
        for f in res.multi_face_landmarks or []
    ]


def _check_face(lm: F64, w: int, h: int) -> None:
    face_h = float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
    if face_h < MIN_FACE_PX:
        raise ParamError(
            f"the face is too small ({face_h:.0f} px from forehead to chin, at least {MIN_FACE_PX} needed); "
            "use a larger or closer photo"
        )
    pad = 0.03 * face_h
    if lm[:, 0].min() < -pad or lm[:, 1].min() < -pad or lm[:, 0].max() > w + pad or lm[:, 1].max() > h + pad:
        raise ParamError("the face is cut off by the edge of the photo; use one that shows the whole head")
    up, side = lm[152] - lm[10], lm[454] - lm[234]
    n = np.cross(side, up)
    n /= np.linalg.norm(n)
    yaw, pitch = np.degrees(np.arctan2(n[0], n[2])), np.degrees(np.arctan2(n[1], n[2]))
    eye = lm[263, :2] - lm[33, :2]
    roll = np.degrees(np.arctan2(eye[1], eye[0]))
    if abs(yaw) > 20 or abs(pitch) > 25 or abs(roll) > 20:
        raise ParamError(
            f"the face is turned too far (yaw {yaw:.0f}, pitch {pitch:.0f}, tilt {roll:.0f} degrees); "
            "use a front-facing portrait"
        )
    mw = float(np.linalg.norm(lm[291, :2] - lm[61, :2]))
    gap = float(np.max(lm[list(LOWER_INNER), 1] - lm[list(UPPER_INNER), 1]))
    if gap > 0.3 * mw:
        raise ParamError("the mouth is open in the photo; use one with a closed or gently smiling mouth")


# ---------------------------------------------------------------- framing and person mask


def _crop(img: U8, lm: F64) -> tuple[U8, F64]:
    """Square crop around head and shoulders, scaled to SIZE (never upscaled past the photo's size)."""
    h, w = img.shape[:2]
    face_h = float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
    side = int(min(w, h, max(SIZE, face_h / 0.3)))
    cx = float(lm[list(OVAL), 0].mean())
    top_of_head = float(lm[10, 1]) - 0.75 * face_h
    y0 = top_of_head - 0.06 * side
    y0 = min(y0, float(lm[1, 1]) - 0.42 * side)
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0i = int(round(np.clip(y0, 0, h - side)))
    crop = img[y0i : y0i + side, x0 : x0 + side]
    k = SIZE / side
    if side != SIZE:
        interp = cv2.INTER_AREA if side > SIZE else cv2.INTER_CUBIC
        crop = np.asarray(cv2.resize(crop, (SIZE, SIZE), interpolation=interp), np.uint8)
    out = lm.copy()
    out[:, 0] = (out[:, 0] - x0) * k
    out[:, 1] = (out[:, 1] - y0i) * k
    out[:, 2] *= k
    return np.ascontiguousarray(crop), out


def _person_mask(img: U8, lm: F64) -> U8:
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
    chin = float(lm[152, 1]) + 0.3 * float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
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


def _decontaminate(img: U8, alpha: U8) -> U8:
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


# ---------------------------------------------------------------- the mesh


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


def _smoothstep(a: float, b: float, x: F64) -> F64:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return np.asarray(t * t * (3 - 2 * t), dtype=np.float64)


class _Mesh:
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
        self.face_h = float(np.linalg.norm(xy[152] - xy[10]))

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
        """Depth in front of the head's rotation axis (through the ears), per vertex and per pixel.

        The per-pixel depth is limited to a slope (pixels of depth per pixel), so that turning the head
        a few degrees cannot fold the steep sides of the face over themselves.
        """
        z = self.lm[:, 2]
        d = np.zeros(len(self.verts))
        d[:N_LANDMARKS] = np.maximum((z[234] + z[454]) / 2 - z, 0.0)
        ys, xs, t, bary = self.rasterize(shape)
        img = np.zeros(shape[:2], np.float32)
        img[ys, xs] = np.einsum("nk,nk->n", bary, self.with_rings(d[:, None])[:, 0][self.tris[t]])
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

    def fold_check(self, deltas: dict[str, F64], depth: F64) -> float:
        """Smallest area ratio of any triangle over single fields, likely mixes and head turns."""
        p0, tris = self.verts, self.tris

        def areas(p: F64) -> F64:
            a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
            return np.asarray(np.cross(b - a, c - a), dtype=np.float64)

        a0 = areas(p0)
        solid = np.abs(a0) > 6.0  # slivers at the mouth corners may flip unseen
        strip = (self.kind == self.MOUTH) & ~solid
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


def _field(raster: tuple[I64, I64, I64, F64], mesh: _Mesh, d: F64) -> Field:
    """Interpolate per-vertex values over the mesh into a field on the box where they are non-zero."""
    ys, xs, t, bary = raster
    full = np.zeros((int(ys.max()) + 1, int(xs.max()) + 1, d.shape[1]), np.float32)
    full[ys, xs] = np.einsum("nk,nkc->nc", bary, d[mesh.tris[t]])
    return _crop_field(full)


def _crop_field(full: F32) -> Field:
    """Keep the box of a full-frame field where it moves pixels visibly."""
    big = np.abs(full).max(2) > 0.2  # a fifth of a pixel is invisible; a smaller box is faster
    if not big.any():
        return Field(0, 0, np.zeros((1, 1, full.shape[2]), np.float16))
    rows, cols = np.nonzero(big.any(1))[0], np.nonzero(big.any(0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Field(x0, y0, full[y0:y1, x0:x1].astype(np.float16))


# ---------------------------------------------------------------- deformations (mouth widths unless noted)


def _basis(name: str, m: _Mesh) -> F64:
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
            jaw * lateral * (lip + (1 - lip) * _smoothstep(0.0, 0.7, vr)),
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


def _brows(m: _Mesh, up: bool) -> F64:
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


# ---------------------------------------------------------------- rest face, teeth, eyelids, colours


def _rest_face(img: U8, lm: F64) -> tuple[U8, F64, U8 | None]:
    """Close a parted mouth (lips overlapping slightly, nothing at the corners) and soften a broad smile."""
    m = _Mesh(lm)
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
        delta -= min((smile - 0.06) / 0.09, 1.0) * 0.8 * _basis("smile_up", m)
    out = m.warp(img, delta)
    new = lm.copy()
    new[:, :2] += delta[:N_LANDMARKS]
    new[lo, :2] = new[up, :2]
    teeth = _photo_teeth(img, lm, new) if gap.max() > 0.05 * m.mw else None
    return out, new, teeth


def _snap_seam(img: U8, lm: F64, m: _Mesh) -> F64:
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


TEETH_SIZE = (20, 48)
"""Teeth texture rows x columns; rows span TEETH_SPAN below the seam, columns the mouth's width."""


def _teeth_grid(m: _Mesh, seam: tuple[F64, F64]) -> tuple[F64, F64, F64]:
    """Mouth-frame (u, v) of every texel of the teeth texture, for a seam given as (u, v) samples."""
    rows, cols = TEETH_SIZE
    u = np.linspace(-0.5, 0.5, cols)[None, :].repeat(rows, 0)
    order = np.argsort(seam[0])
    v_seam = np.interp(u, seam[0][order], seam[1][order])
    v = v_seam + np.linspace(TEETH_SPAN[0], TEETH_SPAN[1], rows)[:, None]
    return u, v, v_seam


def _photo_teeth(img: U8, lm: F64, rest: F64) -> U8:
    """The photo's own teeth, resampled below the rest seam (the hidden top edge repeats the top row)."""
    m = _Mesh(lm)
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


def _synthetic_teeth(img: U8, lm: F64) -> U8:
    """Upper teeth coloured from the eye whites: tips scalloped, darker toward the corners and the tips."""
    m = _Mesh(lm)
    up = np.array(UPPER_INNER)
    u, v, v_seam = _teeth_grid(m, (m.u[up], m.v[up]))
    below = (v - v_seam) * m.mw
    # centrals longest, then laterals and canines; a slight scallop marks the teeth without dark gaps
    widths = np.abs(u) / 0.085
    tip = m.mw * (0.085 - 0.02 * np.clip(np.abs(u) / 0.3, 0, 1) ** 2 - 0.006 * np.abs(np.sin(np.pi * widths)) ** 3)
    shade = (1 - 0.55 * np.clip(np.abs(u) / 0.42, 0, 1) ** 2) * (1 - 0.25 * np.clip(below / tip, 0, 1) ** 3)
    shade *= 1 - 0.05 * np.abs(np.sin(np.pi * widths)) ** 8
    color = np.clip(_sclera_color(img, lm)[None, None, :] * shade[..., None], 0, 255)
    a = np.clip(tip - below + 0.5, 0.0, 1.0) * (1 - _smoothstep(0.22, 0.42, np.abs(u)))
    return np.dstack([color, a * 255]).round().astype(np.uint8)


def _wears_glasses(img: U8, lm: F64) -> bool:
    """A strong horizontal edge across the top of the nose (a glasses bridge), far above skin texture."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    edges = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    a, b = lm[9, :2], lm[197, :2]
    pts = (a + (b - a) * np.linspace(0, 1, 40)[:, None]).astype(np.float32)
    bridge = float(cv2.remap(edges, pts[:, 0:1], pts[:, 1:2], cv2.INTER_LINEAR).max())
    cx, cy = (int(v) for v in lm[50, :2])
    cheek = float(edges[cy - 5 : cy + 5, cx - 5 : cx + 5].mean()) + 1.0
    return bridge > 120.0 and bridge / cheek > 6.0


def _mouth_colors(img: U8, lm: F64) -> F32:
    """Interior (dark red-brown from the lip colour), tongue and lip colours, BGR rows."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[list(UPPER_OUTER) + list(LOWER_OUTER[::-1]), :2]).astype(np.int32)], (1,))
    lip = np.median(img[mask > 0].reshape(-1, 3), axis=0).astype(np.float64)
    interior = lip * np.array([0.11, 0.11, 0.22])
    tongue = lip * np.array([0.42, 0.42, 0.68])
    return np.asarray(np.stack([interior, tongue, lip]), np.float32)


def _eyelid(img: U8, lm: F64, k: int) -> EyeLid:
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
    skin += np.clip(0.8 * borrowed, -10, 10) * (hole[..., None] > 0)  # grain, not edges
    lid = np.clip(skin[pad:-pad, pad:-pad] * 0.95, 0, 255).astype(np.uint8)
    line = np.zeros(crop.shape[:2], np.uint8)
    cv2.polylines(line, [np.round((upper - [x0 - pad, y0 - pad]) * 16).astype(np.int32)], False, (1,), 2, cv2.LINE_8, 4)
    lashes = crop[line > 0].astype(np.float64)
    dark = lashes[lashes.sum(1) <= np.percentile(lashes.sum(1), 30)] if len(lashes) else np.zeros((1, 3))
    cols = slice(pad, crop.shape[1] - pad)
    top, bot, xs = top[cols], bot[cols], xs[cols]
    closed = bot - 0.12 * (bot - top)
    outer_end = upper[0, 0] if k == 0 else upper[-1, 0]
    t_outer = 1 - np.abs(xs - outer_end) / max(float(np.ptp(upper[:, 0])), 1.0)
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


# ---------------------------------------------------------------- head region and checks


def _head_region(
    img: U8, lm: F64, alpha: U8, fields: dict[str, Field], depth: Field
) -> tuple[tuple[int, int], npt.NDArray[np.float16], tuple[float, float], float]:
    """Rows redrawn per frame, how much each pixel follows the rigid head motion, pivot, shoulder row."""
    h, w = alpha.shape
    xy = lm[:, :2]
    face_h = float(np.linalg.norm(xy[152] - xy[10]))
    face_w = float(np.linalg.norm(xy[454] - xy[234]))
    cx, chin = float(xy[list(OVAL), 0].mean()), float(xy[152, 1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    person = alpha > 127
    head = person & (yy < chin + 0.05 * face_h) & (np.abs(xx - cx) < 0.95 * face_w)
    neck = person & (yy < chin + 0.6 * face_h) & (np.abs(xx - xy[152, 0]) < 0.3 * face_w)
    region = (head | neck).astype(np.uint8)
    grow = max(3, int(0.08 * face_h)) | 1
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    weight = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.05 * face_h)
    weight = np.asarray(weight, np.float32) * (1 - _smoothstep(chin + 0.1 * face_h, chin + 0.5 * face_h, yy)).astype(
        np.float32
    )
    shoulder = chin + 0.25 * face_h
    rows = np.nonzero((weight > 0.01).any(1))[0]
    boxes = [(f.y, f.y + f.data.shape[0]) for f in (*fields.values(), depth)]
    top = max(0, min([int(rows.min())] + [b[0] for b in boxes]) - 12)
    bottom = max([int(rows.max()), int(shoulder + 0.4 * face_h)] + [b[1] for b in boxes]) + 8
    bottom = min(h, bottom)
    pivot = (float(xy[152, 0]), chin + 0.35 * face_h)
    return (top, bottom), weight[top:bottom].astype(np.float16), pivot, float(shoulder)


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


def check_folds(pack: AvatarPack) -> float:
    """Smallest Jacobian determinant of the pack's fields, singly and mixed, away from where the lips part."""
    w, h = pack.size
    seam = np.zeros((h, w), np.uint8)
    cv2.polylines(
        seam, [np.round(pack.landmarks[list(UPPER_INNER), :2] * 16).astype(np.int32)], False, (1,), 1, cv2.LINE_8, 4
    )
    lm = pack.landmarks
    corner = max(2.0, 0.06 * float(np.linalg.norm(lm[291, :2] - lm[61, :2])))
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
