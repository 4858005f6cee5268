"""Build an avatar pack from a portrait: each step in its own module, put together in order here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from liveavatar.errors import ProcessingError
from liveavatar.render.appearance import eyelid, mouth_colors, rest_face, synthetic_teeth, wears_glasses
from liveavatar.render.arrays import F16, F64, U8, smoothstep
from liveavatar.render.detection import SIZE, Framing, check_face, check_image, crop, detect
from liveavatar.render.fields import basis, crop_field, field_from_vertices, min_area_ratio
from liveavatar.render.landmarks import N_LANDMARKS, OVAL, face_height
from liveavatar.render.loop_build import build_loop
from liveavatar.render.matting import decontaminate, person_mask
from liveavatar.render.mesh import Mesh
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, AvatarPack, Field

Progress = Callable[[str, float], None]


def build_pack(
    image_bgr: np.ndarray[Any, Any],
    *,
    avatar_id: str,
    name: str,
    gender: str = "",
    framing: Framing = "presenter",
    size: tuple[int, int] = (SIZE, SIZE),
    clip: bytes | None = None,
    clip_at: float = 0.0,
    progress: Progress | None = None,
) -> AvatarPack:
    """Prepare a portrait for animation; raises ParamError for a photo it cannot animate well.

    Presenter framing zooms in on the face; where the warp folds at that size, a slightly wider crop is
    tried, then the photo's original framing. With a `clip` (a video, `image_bgr` its best frontal frame, at
    `clip_at` seconds) the pack is a video avatar's: the stretch of the clip around that frame becomes its
    idle loop (ParamError too for a clip it cannot loop).
    """

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            progress(stage, frac)

    if clip is not None:
        pack = build_pack(
            image_bgr,
            avatar_id=avatar_id,
            name=name,
            gender=gender,
            framing=framing,
            size=size,
            progress=lambda stage, frac: report(stage, 0.4 * frac),
        )
        pack.loop = build_loop(clip, pack, image_bgr, clip_at, lambda stage, frac: report(stage, 0.4 + 0.6 * frac))
        pack.meta["loop_frames"] = len(pack.loop.frames)
        return pack
    img = check_image(image_bgr)
    report("finding the face", 0.05)
    lm = detect(img)
    check_face(lm, img.shape[1], img.shape[0])
    # the fold check is sensitive to the face's size in pixels: a slightly wider crop often passes
    attempts: list[tuple[Framing, float]] = []
    if framing == "presenter":
        attempts += [("presenter", wider) for wider in PRESENTER_WIDER]
    attempts.append(("original", 1.0))
    for index, (how, wider) in enumerate(attempts):
        try:
            return _build(img, lm, how, size, wider, report, avatar_id=avatar_id, name=name, gender=gender)
        except Folds:
            if index == len(attempts) - 1:
                raise
            report("framing the photo a little wider", 0.3)
    raise AssertionError("unreachable")


PRESENTER_WIDER = (1.0, 1.15, 1.3, 1.5)
"""Presenter crops tried in turn (1: the face at FACE_SHARE) before the photo's own framing."""


class Folds(ProcessingError):
    """The warp folds over on this face."""


def _build(
    img: U8,
    lm: F64,
    framing: Framing,
    size: tuple[int, int],
    wider: float,
    report: Progress,
    *,
    avatar_id: str,
    name: str,
    gender: str,
) -> AvatarPack:
    img, lm = crop(img, lm, framing, size, wider)
    report("separating the person from the background", 0.35)
    alpha = person_mask(img, lm)
    img = decontaminate(img, alpha)
    report("preparing the face", 0.55)
    img, lm, teeth = rest_face(img, lm)
    report("computing warp fields", 0.7)
    mesh = Mesh(lm)
    deltas = {name: basis(name, mesh) for name in (*MOUTH_FIELDS, *FACE_FIELDS)}
    glasses = wears_glasses(img, lm)
    if glasses:  # the brows sit on the rims: moving them would bend the glasses
        for field_name in FACE_FIELDS:
            deltas[field_name] *= 0.3
    bary = mesh.rasterize(img.shape[:2])
    fields = {name: field_from_vertices(bary, mesh, d) for name, d in deltas.items()}
    depth_v, depth_img = mesh.depth(img.shape)
    depth = crop_field(depth_img[..., None])
    report("checking the warp for folds", 0.85)
    min_jac = min_area_ratio(mesh, deltas, depth_v)
    if min_jac <= 0.05:
        raise Folds(f"the warp folds over on this face (min Jacobian {min_jac:.3f})")
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
        eyes=[eyelid(img, lm, i) for i in range(2)],
        teeth=teeth if teeth is not None else synthetic_teeth(img, lm),
        mouth_colors=mouth_colors(img, lm),
        meta={
            "min_jacobian": round(float(min_jac), 4),
            "photo_teeth": teeth is not None,
            "glasses": glasses,
            "framing": framing,
        },
    )
    report("done", 1.0)
    return pack


def _head_region(
    img: U8, lm: F64, alpha: U8, fields: dict[str, Field], depth: Field
) -> tuple[tuple[int, int], F16, tuple[float, float], float]:
    """Rows redrawn per frame, how much each pixel follows the rigid head motion, pivot, shoulder row."""
    h, w = alpha.shape
    xy = lm[:, :2]
    face_h = face_height(lm)
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
    weight = np.asarray(weight, np.float32) * (1 - smoothstep(chin + 0.1 * face_h, chin + 0.5 * face_h, yy)).astype(
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
