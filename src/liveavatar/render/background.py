"""What the avatar is drawn over: a solid colour, or an image scaled to fill the frame and cropped."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError

U8 = npt.NDArray[np.uint8]

DEFAULT_COLOR = "#5b6b7c"
MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000


def parse_color(color: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """'#rgb', '#rrggbb' or an (r, g, b) tuple -> (b, g, r)."""
    if isinstance(color, str):
        s = color.strip().lstrip("#")
        if len(s) == 3:
            s = "".join(ch * 2 for ch in s)
        try:
            if len(s) != 6:
                raise ValueError(s)
            r, g, b = (int(s[i : i + 2], 16) for i in (0, 2, 4))
        except ValueError as e:
            raise ParamError(f"not a colour: {color!r} (use #rrggbb)") from e
    else:
        if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
            raise ParamError(f"not a colour: {color!r} (use three integers 0..255)")
        r, g, b = color
    return b, g, r


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG, JPEG, WebP or BMP header, without decoding the pixels."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    raise ParamError("the background image is not a PNG, JPEG, WebP or BMP file")


class Background:
    """A backdrop for the avatar: a solid colour, or an image that fills the frame (cropped, not stretched)."""

    def __init__(self, color: str | tuple[int, int, int] = DEFAULT_COLOR, image: U8 | None = None) -> None:
        self.color = parse_color(color)
        self._image = image
        self._cache: dict[tuple[int, int], U8] = {}

    @classmethod
    def solid(cls, color: str | tuple[int, int, int]) -> Background:
        """A plain colour ('#rrggbb' or (r, g, b))."""
        return cls(color)

    @classmethod
    def from_bytes(cls, data: bytes) -> Background:
        """An encoded image (PNG, JPEG, WebP, BMP), checked for size before it is decoded."""
        if len(data) > MAX_BYTES:
            raise ParamError(f"the background image is larger than {MAX_BYTES // (1024 * 1024)} MB")
        w, h = image_size(data)
        if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise ParamError(f"the background image is too large ({w}x{h} pixels)")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ParamError("the background image could not be decoded")
        return cls(image=np.asarray(img, dtype=np.uint8))

    @property
    def is_image(self) -> bool:
        """True for an image backdrop, False for a solid colour."""
        return self._image is not None

    def frame(self, width: int, height: int) -> U8:
        """The backdrop as a height x width x 3 BGR array (cached per size; do not modify it)."""
        key = (width, height)
        if key not in self._cache:
            self._cache[key] = self._render(width, height)
        return self._cache[key]

    def _render(self, width: int, height: int) -> U8:
        if self._image is None:
            out = np.empty((height, width, 3), np.uint8)
            out[:] = self.color
            return out
        h, w = self._image.shape[:2]
        k = max(width / w, height / h)
        sw, sh = max(width, round(w * k)), max(height, round(h * k))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
        scaled = cv2.resize(self._image, (sw, sh), interpolation=interp)
        x0, y0 = (sw - width) // 2, (sh - height) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])
