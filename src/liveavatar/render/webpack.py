"""The web pack: what the browser's WebGL2 renderer (web/webgl-renderer.js) needs to draw an avatar pack.

One binary file: b"LAWP", u32 version, u32 header length, the UTF-8 JSON header, zero padding to 8 bytes,
then the arrays the header lists (little-endian; offsets from the start of the data section). Colours are
RGB(A) (the pack's are BGR); y coordinates of band things are band rows (frame row - band top). The file is
stored gzip-compressed next to the pack and rebuilt when the pack file is newer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.render.inverse_warp import COARSE, ITERATIONS, FieldGroup
from liveavatar.render.landmarks import LOWER_INNER, UPPER_INNER
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, TEETH_SPAN, AvatarPack
from liveavatar.render.renderer import MAX_ROLL, MAX_SHIFT, MAX_TURN

WEB_PACK_VERSION = 1
WEB_PACK_PATH = "/api/open/v3/avatar/web-pack/{avatar_id}"
"""Where the API serves an avatar's web pack (api/webpack.py); HELLO messages point browsers to it."""
MAGIC = b"LAWP"
_ALIGN = 8


def _rgb(bgr: Any) -> list[float]:
    b, g, r = (float(v) for v in np.asarray(bgr, np.float64)[:3])
    return [r, g, b]


class _Blob:
    """Arrays laid one after another, each aligned, with their place in the header."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.index: dict[str, dict[str, Any]] = {}

    def add(self, name: str, array: np.ndarray[Any, Any]) -> None:
        dtype = {np.dtype(np.uint8): "u8", np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}[array.dtype]
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        self.index[name] = {"offset": self.size, "dtype": dtype, "shape": list(array.shape)}
        pad = -len(data) % _ALIGN
        self.parts.append(data + b"\0" * pad)
        self.size += len(data) + pad


def _group(group: FieldGroup, names: tuple[str, ...], blob: _Blob, key: str) -> dict[str, Any]:
    present = [n for n in names if n in group.stack]
    blob.add(key, np.stack([group.full(n) for n in present]).astype(np.float16))
    return {
        "box": [group.x0, group.y0, group.x1, group.y1],
        "names": present,
        "reach": [group.reach[n] for n in present],
        "limit": list(group.limit),
        "array": key,
    }


def build_web_pack(pack: AvatarPack) -> bytes:
    """The web pack of an avatar pack (uncompressed bytes)."""
    w, h = pack.size
    top, bottom = pack.band
    blob = _Blob()
    rgba = np.dstack([pack.image[..., ::-1], pack.alpha])
    blob.add("image", rgba)
    blob.add("head_weight", pack.head_weight.astype(np.float16))
    a = pack.alpha[top:bottom]
    filled = np.nonzero((a > 0).any(1))[0]
    reach_up = pack.pivot[1] - top - (float(filled[0]) if len(filled) else 0.0)
    margin = int(reach_up * math.sin(math.radians(MAX_ROLL)) + MAX_SHIFT) + 3
    mouth = _group(FieldGroup(pack, MOUTH_FIELDS, top, margin), MOUTH_FIELDS, blob, "mouth_fields")
    brows = _group(FieldGroup(pack, FACE_FIELDS, top, margin), FACE_FIELDS, blob, "brow_fields")
    d = pack.depth
    blob.add("depth", d.data[..., 0].astype(np.float16))
    dh, dw = d.data.shape[:2]
    depth = {
        "x": d.x,
        "y": d.y - top,
        "limit": [d.x - margin, d.y - top - margin, d.x + dw + margin, d.y - top + dh + margin],
        "array": "depth",
    }
    lm = pack.landmarks[:, :2].astype(np.float64) - [0.0, top]
    idx = list(UPPER_INNER + LOWER_INNER[::-1])
    centre = (lm[61] + lm[291]) / 2
    eu = lm[291] - lm[61]
    mw = float(np.linalg.norm(eu))
    eu = eu / mw
    seam = lm[list(UPPER_INNER)] - centre
    su, sv = seam @ eu / mw, seam @ np.array([-eu[1], eu[0]]) / mw
    order = np.argsort(su)
    lips = {
        "upper": len(UPPER_INNER),
        "rest": lm[idx].tolist(),
        "deltas": {n: pack.deltas[n][idx].astype(np.float64).tolist() for n in MOUTH_FIELDS if n in pack.deltas},
        "depth": pack.deltas["depth"][idx, 0].astype(np.float64).tolist(),
    }
    eyes = []
    for i, eye in enumerate(pack.eyes):
        eh, ew = eye.lid.shape[:2]
        blob.add(f"lid{i}", np.dstack([eye.lid[..., ::-1], np.full((eh, ew), 255, np.uint8)]))
        blob.add(f"lid{i}_lines", np.stack([eye.upper, eye.closed, eye.lash]).astype(np.float32))
        eyes.append(
            {"x": eye.x, "y": eye.y - top, "w": ew, "h": eh, "lid": f"lid{i}", "lines": f"lid{i}_lines",
             "lash_color": _rgb(eye.lash_color), "band": float(eye.band)}
        )  # fmt: skip
    teeth = pack.teeth.copy()
    teeth[..., :3] = teeth[..., 2::-1]
    blob.add("teeth", teeth)
    header = {
        "version": WEB_PACK_VERSION,
        "avatar_id": pack.avatar_id,
        "size": [w, h],
        "band": [top, bottom],
        "shoulder_row": float(pack.shoulder_row),
        "pivot": [float(pack.pivot[0]), float(pack.pivot[1]) - top],
        "margin": margin,
        "face_centre": lm[[1, 10, 152]].mean(0).tolist(),
        "mouth": mouth,
        "brows": brows,
        "depth": depth,
        "lips": lips,
        "mouth_frame": {
            "centre": centre.tolist(),
            "eu": eu.tolist(),
            "mw": mw,
            "seam_u": su[order].tolist(),
            "seam_v": sv[order].tolist(),
            "teeth_depth": float(pack.deltas["depth"][13, 0]),
        },
        "teeth": {"array": "teeth", "span": list(TEETH_SPAN)},
        "mouth_colors": [_rgb(c) for c in pack.mouth_colors],
        "eyes": eyes,
        "limits": {"max_turn": MAX_TURN, "max_roll": MAX_ROLL, "max_shift": MAX_SHIFT},
        "solver": {"coarse": COARSE, "iterations": ITERATIONS},
        "arrays": blob.index,
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<II", WEB_PACK_VERSION, len(text)) + text
    head += b"\0" * (-len(head) % _ALIGN)
    return head + b"".join(blob.parts)


def read_web_pack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """Header and arrays of an (uncompressed) web pack: the reader the browser mirrors, for tests and tools."""
    if data[:4] != MAGIC:
        raise ValueError("not a web pack")
    version, n = struct.unpack_from("<II", data, 4)
    if version != WEB_PACK_VERSION:
        raise ValueError(f"web pack version {version} is not supported")
    header = json.loads(data[12 : 12 + n])
    start = 12 + n + (-(12 + n) % _ALIGN)
    types: dict[str, np.dtype[Any]] = {"u8": np.dtype(np.uint8), "f16": np.dtype("<f2"), "f32": np.dtype("<f4")}
    arrays = {}
    for name, spec in header["arrays"].items():
        count = int(np.prod(spec["shape"]))
        arr = np.frombuffer(data, types[spec["dtype"]], count, start + spec["offset"])
        arrays[name] = arr.reshape(spec["shape"])
    return header, arrays


@dataclass(frozen=True)
class WebPackFile:
    """A web pack on disk (gzip-compressed) and its entity tag."""

    path: Path
    etag: str


def web_pack_path(pack_path: Path) -> Path:
    """Where the web pack of the pack file at `pack_path` is cached."""
    return pack_path.with_name(f"{pack_path.stem}.web{WEB_PACK_VERSION}.gz")


def ensure_web_pack(pack: AvatarPack, pack_path: Path) -> WebPackFile:
    """The cached web pack of `pack` (saved at `pack_path`), (re)built when missing or older than the pack."""
    path = web_pack_path(pack_path)
    with _BUILDING:  # one build at a time, however many browsers ask at once
        if not _fresh(path, pack_path):
            _write(path, pack)
    stat = path.stat()
    stamp = (str(path), stat.st_mtime_ns, stat.st_size)
    etag = _ETAGS.get(stamp)
    if etag is None:
        etag = _ETAGS[stamp] = '"' + hashlib.sha256(path.read_bytes()).hexdigest()[:20] + '"'
    return WebPackFile(path, etag)


def _fresh(path: Path, pack_path: Path) -> bool:
    return path.exists() and (not pack_path.exists() or path.stat().st_mtime >= pack_path.stat().st_mtime)


def _write(path: Path, pack: AvatarPack) -> None:
    data = gzip.compress(build_web_pack(pack), compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: another process reads the old file or the new one


_BUILDING = threading.Lock()
_ETAGS: dict[tuple[str, int, int], str] = {}
"""Entity tags of web pack files by (path, mtime, size): hashed once per file version."""
