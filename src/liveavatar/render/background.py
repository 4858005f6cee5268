"""What the avatar is drawn over: a solid colour, an image, or a looping video, scaled to fill the frame and cropped."""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import av
import cv2
import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError

U8 = npt.NDArray[np.uint8]

DEFAULT_COLOR = "#5b6b7c"
MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000

VIDEO_MAX_SECONDS = 30.0
VIDEO_MAX_SIDE = 1920
VIDEO_MAX_PIXELS = 1920 * 1088
VIDEO_FPS = 12.5
"""Background video frames kept per second (the avatar itself moves at 25 fps)."""
VIDEO_SHORT_SIDE = 512
"""Kept frames are scaled down to at most this short side: avatar frames are 512x512, so showing one is a crop."""
VIDEO_QUALITY = 85
"""JPEG quality of the kept frames: a 30 s loop stays a few MB instead of hundreds."""


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


def is_video(data: bytes) -> bool:
    """Whether `data` starts like an MP4/MOV (ISO BMFF) or WebM/Matroska file."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3"


def _kept_size(width: int, height: int) -> tuple[int, int]:
    k = min(1.0, VIDEO_SHORT_SIDE / min(width, height))
    return max(2, round(width * k / 2) * 2), max(2, round(height * k / 2) * 2)


def decode_video(data: bytes) -> tuple[list[bytes], float]:
    """JPEG frames sampled at VIDEO_FPS from an MP4/WebM within the size and duration limits; and the fps."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ParamError("the background video has no video stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            if w <= 0 or h <= 0 or max(w, h) > VIDEO_MAX_SIDE or w * h > VIDEO_MAX_PIXELS:
                raise ParamError(f"the background video is too large ({w}x{h}; at most 1920x1080)")
            declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            if declared is None and container.duration:
                declared = container.duration / av.time_base
            if declared is not None and declared > VIDEO_MAX_SECONDS + 0.5:
                raise ParamError(f"the background video is longer than {VIDEO_MAX_SECONDS:g} s ({declared:.1f} s)")
            stream.thread_type = "AUTO"
            kw, kh = _kept_size(w, h)
            frames: list[bytes] = []
            start: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                rate = float(stream.average_rate or 25)
                t = float(frame.time) if frame.time is not None else index / rate
                start = t if start is None else start
                if t - start > VIDEO_MAX_SECONDS + 0.5:
                    raise ParamError(f"the background video is longer than {VIDEO_MAX_SECONDS:g} s")
                if t - start + 1e-6 < len(frames) / VIDEO_FPS:
                    continue  # sample at VIDEO_FPS: skip frames until the next slot
                image = frame.reformat(width=kw, height=kh, format="bgr24").to_ndarray()
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, VIDEO_QUALITY])
                if ok:
                    frames.append(encoded.tobytes())
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise ParamError(f"the background video could not be decoded ({exc})") from exc
    if not frames:
        raise ParamError("the background video has no frames")
    return frames, VIDEO_FPS


class Background:
    """A backdrop for the avatar: a solid colour, or an image that fills the frame (cropped, not stretched).

    A video backdrop holds its frames (JPEG, sampled at `fps`) and loops them: `still(t)` is the image
    backdrop for time `t` since it started.
    """

    def __init__(
        self,
        color: str | tuple[int, int, int] = DEFAULT_COLOR,
        image: U8 | None = None,
        *,
        frames: Sequence[bytes] = (),
        fps: float = VIDEO_FPS,
    ) -> None:
        self.color = parse_color(color)
        self._frames = tuple(frames)
        self.fps = fps
        if image is None and self._frames:
            image = _decode_jpeg(self._frames[0])
        self._image = image
        self._cache: dict[tuple[int, int], U8] = {}
        self._still: tuple[int, Background] | None = None

    @classmethod
    def solid(cls, color: str | tuple[int, int, int]) -> Background:
        """A plain colour ('#rrggbb' or (r, g, b))."""
        return cls(color)

    @classmethod
    def from_bytes(cls, data: bytes) -> Background:
        """An encoded image (PNG, JPEG, WebP, BMP) or video (MP4, WebM), checked for size before it is decoded."""
        if is_video(data):
            return cls.from_video(data)
        if len(data) > MAX_BYTES:
            raise ParamError(f"the background image is larger than {MAX_BYTES // (1024 * 1024)} MB")
        w, h = image_size(data)
        if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise ParamError(f"the background image is too large ({w}x{h} pixels)")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ParamError("the background image could not be decoded")
        return cls(image=np.asarray(img, dtype=np.uint8))

    @classmethod
    def from_video(cls, data: bytes) -> Background:
        """A looping video backdrop from an MP4 or WebM file (at most 1080p, 30 s and MAX_BYTES)."""
        if len(data) > MAX_BYTES:
            raise ParamError(f"the background video is larger than {MAX_BYTES // (1024 * 1024)} MB")
        frames, fps = decode_video(data)
        return cls(frames=frames, fps=fps)

    @property
    def is_image(self) -> bool:
        """True for an image (or video) backdrop, False for a solid colour."""
        return self._image is not None

    @property
    def is_video(self) -> bool:
        """True for a looping video backdrop (more than one frame)."""
        return len(self._frames) > 1

    @property
    def frame_count(self) -> int:
        """Frames of a video backdrop (0 for a colour or image)."""
        return len(self._frames)

    @property
    def duration(self) -> float:
        """Seconds of one loop of a video backdrop (0 for a colour or image)."""
        return len(self._frames) / self.fps if self._frames else 0.0

    def frame_index(self, t: float) -> int:
        """Which frame of the loop shows `t` seconds after the video started."""
        return int(max(t, 0.0) * self.fps) % len(self._frames) if self._frames else 0

    def still(self, index: int) -> Background:
        """Frame `index` of a video backdrop as an image backdrop (the last one is kept for reuse)."""
        if not self._frames:
            return self
        if self._still is None or self._still[0] != index:
            self._still = (index, Background(image=_decode_jpeg(self._frames[index % len(self._frames)])))
        return self._still[1]

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
        scaled: U8 = self._image  # already at the right scale when kept at the avatar's size (video frames)
        if (sw, sh) != (w, h):
            interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
            scaled = np.asarray(cv2.resize(self._image, (sw, sh), interpolation=interp), np.uint8)
        x0, y0 = (sw - width) // 2, (sh - height) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])


def _decode_jpeg(data: bytes) -> U8:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ParamError("a background video frame could not be decoded")
    return np.asarray(image, dtype=np.uint8)
