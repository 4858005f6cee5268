"""Avatar pack: everything the renderer needs about one portrait, saved as one small npz file."""

from __future__ import annotations

import io
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from liveavatar.errors import ParamError
from liveavatar.render.arrays import F16, F32, F64, U8

PACK_VERSION = 1

MOUTH_FIELDS: tuple[str, ...] = (
    "jaw_open",
    "lips_wide",
    "lips_round",
    "lips_closed",
    "lower_lip_tuck",
    "smile_up",
    "smile_down",
)
"""Displacement fields solved together around the mouth (the lips' seam makes them steep)."""

FACE_FIELDS: tuple[str, ...] = ("brows_up", "brows_down")
"""Smooth displacement fields applied in one step."""


@dataclass
class Field:
    """A displacement field (h x w x channels) placed at (x, y) in the pack's frame."""

    x: int
    y: int
    data: F16


@dataclass
class EyeLid:
    """A synthetic closed upper lid for one eye, in a box at (x, y) of the frame."""

    x: int
    y: int
    lid: U8
    """Closed-lid skin colours (h x w x 3 BGR)."""
    upper: F32
    """Row of the open lid's edge per column (box coordinates)."""
    closed: F32
    """Row of the lid's edge per column when the eye is closed."""
    lash: F32
    """Lash-line strength per column (0..1)."""
    lash_color: F32
    """BGR of the lashes."""
    band: float
    """Pixels above the open lid's edge that the closing lid also covers (the lash line)."""


@dataclass(eq=False)
class Loop:
    """A video avatar's idle motion: the cropped clip (played forth and back) and the head pose per frame."""

    frames: list[bytes]
    """Each frame of the loop as JPEG (the pack's frame size), in clip order."""
    poses: F32
    """Per frame, the similarity (2 x 3) taking the pack's rest frame onto that frame (the head's pose)."""
    gains: F32
    """Per frame, BGR gains that match the rest frame's mouth region to that frame's light."""
    fps: float
    start: float = 0.0
    """Where the loop starts in the source clip (seconds)."""
    rest: int = 0
    """The loop frame the pack's rest frame was built from."""
    crop: F64 = field(default_factory=lambda: np.eye(2, 3))
    """The similarity (2 x 3) taking the source clip's pixels onto the pack's frame."""


@dataclass(eq=False)
class AvatarPack:
    """A portrait prepared for animation: rest image, person mask, landmarks and warp fields."""

    avatar_id: str
    name: str
    gender: str
    image: U8
    """Rest frame of the person (H x W x 3 BGR, mouth closed); edge colours free of the old background."""
    alpha: U8
    """Person mask (H x W, 255 = person)."""
    landmarks: F32
    """Rest landmarks (478 x 3: x, y in pixels, z depth in pixels, smaller = nearer)."""
    band: tuple[int, int]
    """Rows [top, bottom) redrawn every frame; the rest of the frame is cached."""
    head_weight: F16
    """How much each band pixel follows the rigid head motion (band rows x W)."""
    pivot: tuple[float, float]
    """Centre of head rotation (the neck base)."""
    shoulder_row: float
    """Row above which the body moves fully with the vertical offset (breathing)."""
    depth: Field
    """Depth in front of the head's rotation axis (pixels): yaw and pitch move pixels by angle * depth."""
    fields: dict[str, Field]
    """Forward displacement fields at full strength (names in MOUTH_FIELDS + FACE_FIELDS)."""
    deltas: dict[str, F32]
    """Landmark displacements (478 x 2) at full strength, one per field, plus 'depth' (478 x 1)."""
    eyes: list[EyeLid]
    teeth: U8
    """Upper-teeth texture (rows down from the lip line x columns across the mouth x BGRA)."""
    mouth_colors: F32
    """BGR rows: mouth interior, tongue, lip."""
    meta: dict[str, Any] = field(default_factory=dict)
    loop: Loop | None = None
    """A video avatar's clip; None for a photo avatar."""

    @property
    def kind(self) -> str:
        """ "loop" for an avatar built from a video (its clip is the idle motion), "photo" otherwise."""
        return "photo" if self.loop is None else "loop"

    @property
    def size(self) -> tuple[int, int]:
        """Frame size (width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the pack as a compressed npz file."""
        arrays: dict[str, np.ndarray[Any, Any]] = {
            "image": self.image,
            "alpha": self.alpha,
            "landmarks": self.landmarks,
            "head_weight": self.head_weight,
            "depth": self.depth.data,
            "teeth": self.teeth,
            "mouth_colors": self.mouth_colors,
        }
        boxes: dict[str, list[int]] = {"depth": [self.depth.x, self.depth.y]}
        for name, fld in self.fields.items():
            arrays[f"field.{name}"] = fld.data
            boxes[name] = [fld.x, fld.y]
        for name, d in self.deltas.items():
            arrays[f"delta.{name}"] = d
        for i, eye in enumerate(self.eyes):
            arrays[f"eye{i}.lid"] = eye.lid
            arrays[f"eye{i}.lines"] = np.stack([eye.upper, eye.closed, eye.lash]).astype(np.float32)
            arrays[f"eye{i}.lash_color"] = eye.lash_color.astype(np.float32)
            arrays[f"eye{i}.band"] = np.array([eye.band], np.float32)
            boxes[f"eye{i}"] = [eye.x, eye.y]
        loop_header: dict[str, Any] | None = None
        if self.loop is not None:
            lp = self.loop
            arrays["loop.jpeg"] = np.frombuffer(b"".join(lp.frames), np.uint8)
            arrays["loop.lengths"] = np.array([len(f) for f in lp.frames], np.int64)
            arrays["loop.poses"] = lp.poses.astype(np.float32)
            arrays["loop.gains"] = lp.gains.astype(np.float32)
            arrays["loop.crop"] = lp.crop.astype(np.float64)
            loop_header = {"fps": lp.fps, "start": lp.start, "rest": lp.rest}
        header = {
            "version": PACK_VERSION,
            "loop": loop_header,
            "avatar_id": self.avatar_id,
            "name": self.name,
            "gender": self.gender,
            "band": list(self.band),
            "pivot": list(self.pivot),
            "shoulder_row": self.shoulder_row,
            "boxes": boxes,
            "eyes": len(self.eyes),
            "meta": self.meta,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> AvatarPack:
        """Read a pack written by save()."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            header = json.loads(a["header"].tobytes().decode())
        except (OSError, ValueError, KeyError) as e:
            raise ParamError(f"not an avatar pack: {path}") from e
        if header.get("version") != PACK_VERSION:
            raise ParamError(f"avatar pack version {header.get('version')} is not supported")
        boxes = header["boxes"]
        fields = {
            k[6:]: Field(int(boxes[k[6:]][0]), int(boxes[k[6:]][1]), a[k].astype(np.float16))
            for k in a
            if k.startswith("field.")
        }
        eyes = []
        for i in range(int(header["eyes"])):
            lines = a[f"eye{i}.lines"].astype(np.float32)
            x, y = boxes[f"eye{i}"]
            color = a[f"eye{i}.lash_color"].astype(np.float32)
            band = float(a[f"eye{i}.band"][0])
            eyes.append(EyeLid(int(x), int(y), a[f"eye{i}.lid"], lines[0], lines[1], lines[2], color, band))
        return cls(
            avatar_id=str(header["avatar_id"]),
            name=str(header["name"]),
            gender=str(header["gender"]),
            image=a["image"],
            alpha=a["alpha"],
            landmarks=a["landmarks"].astype(np.float32),
            band=(int(header["band"][0]), int(header["band"][1])),
            head_weight=a["head_weight"].astype(np.float16),
            pivot=(float(header["pivot"][0]), float(header["pivot"][1])),
            shoulder_row=float(header["shoulder_row"]),
            depth=Field(int(boxes["depth"][0]), int(boxes["depth"][1]), a["depth"].astype(np.float16)),
            fields=fields,
            deltas={k[6:]: a[k].astype(np.float32) for k in a if k.startswith("delta.")},
            eyes=eyes,
            teeth=a["teeth"],
            mouth_colors=a["mouth_colors"].astype(np.float32),
            meta=dict(header.get("meta", {})),
            loop=_load_loop(a, header.get("loop")),
        )


TEETH_SPAN = (-0.1, 0.2)
"""Rows of the teeth texture span these offsets below the lips' seam, in mouth widths."""


def _load_loop(a: dict[str, np.ndarray[Any, Any]], header: dict[str, Any] | None) -> Loop | None:
    """A saved pack's loop (packs written before video avatars have none)."""
    if not header:
        return None
    data = a["loop.jpeg"].tobytes()
    ends = np.cumsum(a["loop.lengths"])
    starts = ends - a["loop.lengths"]
    return Loop(
        frames=[data[int(s) : int(e)] for s, e in zip(starts, ends, strict=True)],
        poses=a["loop.poses"].astype(np.float32),
        gains=a["loop.gains"].astype(np.float32),
        fps=float(header["fps"]),
        start=float(header.get("start", 0.0)),
        rest=int(header.get("rest", 0)),
        crop=a["loop.crop"].astype(np.float64),
    )


_T = TypeVar("_T")


def per_pack(build: Callable[[AvatarPack], _T]) -> Callable[[AvatarPack], _T]:
    """`build(pack)` done once per pack object and kept while the pack lives (what its renderers share)."""
    built: weakref.WeakKeyDictionary[AvatarPack, _T] = weakref.WeakKeyDictionary()

    def get(pack: AvatarPack) -> _T:
        found = built.get(pack)
        if found is None:
            found = built[pack] = build(pack)
        return found

    return get
