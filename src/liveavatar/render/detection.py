"""Find the one usable face in a portrait and frame head and shoulders around it."""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np

from liveavatar.errors import ParamError
from liveavatar.render.arrays import F64, U8
from liveavatar.render.landmarks import LOWER_INNER, OVAL, UPPER_INNER, face_height, mouth_width

SIZE = 512
"""Side of the square frame a pack is drawn in, in pixels."""
MIN_FACE_PX = 96
"""Smallest face the builder accepts: forehead landmark to chin, in pixels of the photo."""
MAX_SIDE = 4096
"""Larger photos are scaled down to this side before anything else."""
FACE_SHARE = 0.26
"""Presenter framing: the face's width (cheek to cheek) as a share of the frame's."""
MAX_ZOOM = 1.75
"""Presenter framing never enlarges the photo's pixels more than this."""

Framing = Literal["presenter", "original"]


def check_image(image: np.ndarray[Any, Any]) -> U8:
    """The portrait as a contiguous 8-bit BGR image of a workable size; raises ParamError otherwise."""
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


def detect(img: U8) -> F64:
    """Landmarks (478 x 3, pixels) of the photo's one face; raises ParamError for none or several."""
    faces = face_meshes(img)
    if not faces and max(img.shape[:2]) <= 2048:
        # a second look at twice the size tells a face too small to use from no face at all
        big = np.asarray(cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC), np.uint8)
        faces = [f / 2.0 for f in face_meshes(big)]
    if not faces:
        raise ParamError("no face was found in the photo; use a clear, front-facing portrait")
    faces.sort(key=lambda a: -float(np.ptp(a[:, 1])))
    if len(faces) > 1 and np.ptp(faces[1][:, 1]) > 0.6 * np.ptp(faces[0][:, 1]):
        raise ParamError("the photo shows more than one face; use a portrait of one person")
    return faces[0]


def face_meshes(img: U8) -> list[F64]:
    """Landmarks (478 x 3, pixels) of up to two faces in the image, as MediaPipe finds them."""
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


def check_face(lm: F64, w: int, h: int) -> None:
    """Raise ParamError for a face too small, cut off, turned away or with the mouth open."""
    face_h = face_height(lm)
    if face_h < MIN_FACE_PX:
        raise ParamError(
            f"the face is too small ({face_h:.0f} px from forehead to chin, at least {MIN_FACE_PX} needed); "
            "use a larger or closer photo"
        )
    pad = 0.03 * face_h
    if lm[:, 0].min() < -pad or lm[:, 1].min() < -pad or lm[:, 0].max() > w + pad or lm[:, 1].max() > h + pad:
        raise ParamError("the face is cut off by the edge of the photo; use one that shows the whole head")
    yaw, pitch, roll = head_angles(lm)
    if abs(yaw) > 20 or abs(pitch) > 25 or abs(roll) > 20:
        raise ParamError(
            f"the face is turned too far (yaw {yaw:.0f}, pitch {pitch:.0f}, tilt {roll:.0f} degrees); "
            "use a front-facing portrait"
        )
    if mouth_opening(lm) > 0.3:
        raise ParamError("the mouth is open in the photo; use one with a closed or gently smiling mouth")


def head_angles(lm: F64) -> tuple[float, float, float]:
    """Yaw, pitch and roll of the face in degrees (0, 0, 0: looking straight at the camera)."""
    up, side = lm[152] - lm[10], lm[454] - lm[234]
    n = np.cross(side, up)
    n /= np.linalg.norm(n)
    yaw, pitch = np.degrees(np.arctan2(n[0], n[2])), np.degrees(np.arctan2(n[1], n[2]))
    eye = lm[263, :2] - lm[33, :2]
    roll = np.degrees(np.arctan2(eye[1], eye[0]))
    return float(yaw), float(pitch), float(roll)


def mouth_opening(lm: F64) -> float:
    """The widest gap between the lips as a share of the mouth's width (0: closed)."""
    gap = float(np.max(lm[list(LOWER_INNER), 1] - lm[list(UPPER_INNER), 1]))
    return gap / mouth_width(lm)


def crop(
    img: U8, lm: F64, framing: Framing = "presenter", size: tuple[int, int] = (SIZE, SIZE), wider: float = 1.0
) -> tuple[U8, F64]:
    """A crop around head and shoulders with the aspect of `size` (width, height), scaled to it.

    "presenter": the face spans about FACE_SHARE of the frame's height in width, as on a video call (zoomed in
    at most MAX_ZOOM times past the photo's own pixels; `wider` > 1 takes in that much more around the face);
    "original": the largest such crop the photo has.
    """
    h, w = img.shape[:2]
    out_w, out_h = size
    aspect = out_w / out_h
    face_h = face_height(lm)
    face_w = float(np.linalg.norm(lm[454, :2] - lm[234, :2]))
    least = out_h / MAX_ZOOM * wider
    tall = float(h) if framing == "original" else wider * max(out_h / MAX_ZOOM, face_w / FACE_SHARE, face_h / 0.45)
    tall = min(tall, float(h), w / aspect)  # the crop's height; its width follows from the aspect
    if framing == "presenter" and tall < least and w / aspect < h:
        # a frame wider than the photo: keep the zoom in bounds and widen the photo by repeating its edges
        tall = min(least, float(h))
        pad = int(np.ceil(tall * aspect)) - w + 2
        img = np.asarray(cv2.copyMakeBorder(img, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REPLICATE), np.uint8)
        lm = lm.copy()
        lm[:, 0] += pad // 2
        w += pad
    crop_h, crop_w = max(1, int(tall)), max(1, min(w, int(round(tall * aspect))))
    cx = float(lm[list(OVAL), 0].mean())
    top_of_head = float(lm[10, 1]) - 0.75 * face_h
    y0 = top_of_head - 0.06 * crop_h
    y0 = min(y0, float(lm[1, 1]) - 0.42 * crop_h)
    x0 = int(round(np.clip(cx - crop_w / 2, 0, w - crop_w)))
    y0i = int(round(np.clip(y0, 0, h - crop_h)))
    out_img = img[y0i : y0i + crop_h, x0 : x0 + crop_w]
    kx, ky = out_w / crop_w, out_h / crop_h
    if (crop_w, crop_h) != (out_w, out_h):
        interp = cv2.INTER_AREA if crop_h > out_h else cv2.INTER_CUBIC
        out_img = np.asarray(cv2.resize(out_img, (out_w, out_h), interpolation=interp), np.uint8)
    out = lm.copy()
    out[:, 0] = (out[:, 0] - x0) * kx
    out[:, 1] = (out[:, 1] - y0i) * ky
    out[:, 2] *= (kx + ky) / 2
    return np.ascontiguousarray(out_img), out
