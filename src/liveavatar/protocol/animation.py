"""Animation stream v1: the face a client-rendered session's client draws, as binary messages (no I/O).

Sent on the data channel labelled `ANIMATION_LABEL`, little-endian; byte 0 is the type, byte 1 the version.
Positions are 48 kHz sample indexes on the session's outbound audio timeline; the contract (field by field,
with the browser's side) is docs/animation-stream.md.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from liveavatar.render.face import MOUTH_BASES, FaceState
from liveavatar.render.renderer import MAX_ROLL, MAX_SHIFT, MAX_TURN

ANIMATION_LABEL: Final = "liveavatar-animation"
VERSION: Final = 1
HELLO: Final = 0x00
FRAMES: Final = 0x01
CUT: Final = 0x02
RECORD_BYTES: Final = 13
MAX_FRAMES: Final = 1000
"""Records one FRAMES message may carry (13 kB: well inside any data channel's message size)."""

_HELLO = struct.Struct("<BBHHHI")
_FRAMES = struct.Struct("<BBHIH")
_CUT = struct.Struct("<BBI")
_RECORD = struct.Struct("<5BB7b")
_POSITIONS: Final = 1 << 32


class AnimationError(ValueError):
    """A message that is not animation stream v1 (unknown type or version, wrong length, bad JSON)."""


@dataclass(frozen=True)
class Hello:
    """The stream's set-up: frame rate, the avatar's frame size, the audio RTP timestamp of position 0."""

    fps: int
    width: int
    height: int
    rtp_base: int
    """RTP timestamp of the audio packet carrying sample 0 is rtp_base; of sample p, (rtp_base + p) mod 2^32."""
    info: dict[str, Any] = field(default_factory=dict)
    """The rest, as JSON: avatar_id, web_pack, background, rtp_known."""


@dataclass(frozen=True)
class Frames:
    """Consecutive face states from `first_position`, one every 48000 / fps samples."""

    fps: int
    first_position: int
    states: tuple[FaceState, ...]

    def positions(self) -> list[int]:
        """The audio position of each state."""
        return [self.first_position + i * 48_000 // self.fps for i in range(len(self.states))]


@dataclass(frozen=True)
class Cut:
    """Frames already sent for positions >= `position` are void; fresh ones follow."""

    position: int


Animation = Hello | Frames | Cut


def _scale(value: float, limit: float) -> int:
    return max(-127, min(127, round(value * 127 / limit)))


def _unit(value: float) -> int:
    return max(0, min(255, round(value * 255)))


def pack_state(state: FaceState) -> bytes:
    """One 13-byte record: mouth[5] and blink as u8 (0..1), then yaw, pitch, roll, dx, dy, brows, smile as i8."""
    mouth = np.asarray(state.mouth, dtype=np.float64)
    if mouth.shape != (len(MOUTH_BASES),):
        raise ValueError(f"a mouth has {len(MOUTH_BASES)} weights, not {mouth.shape}")
    return _RECORD.pack(
        *(_unit(float(w)) for w in mouth),
        _unit(state.blink),
        _scale(state.yaw, MAX_TURN),
        _scale(state.pitch, MAX_TURN),
        _scale(state.roll, MAX_ROLL),
        _scale(state.dx, MAX_SHIFT),
        _scale(state.dy, MAX_SHIFT),
        _scale(state.brows, 1.0),
        _scale(state.smile, 1.0),
    )


def unpack_state(record: bytes) -> FaceState:
    """The face state of one record (values as drawn: already within the renderer's clamps)."""
    *mouth, blink, yaw, pitch, roll, dx, dy, brows, smile = _RECORD.unpack(record)
    return FaceState(
        mouth=np.array(mouth, dtype=np.float32) / np.float32(255),
        blink=blink / 255,
        yaw=yaw * MAX_TURN / 127,
        pitch=pitch * MAX_TURN / 127,
        roll=roll * MAX_ROLL / 127,
        dx=dx * MAX_SHIFT / 127,
        dy=dy * MAX_SHIFT / 127,
        brows=brows / 127,
        smile=smile / 127,
    )


def encode_hello(hello: Hello) -> bytes:
    """A HELLO message."""
    info = json.dumps(hello.info, separators=(",", ":"), ensure_ascii=False).encode()
    return _HELLO.pack(HELLO, VERSION, hello.fps, hello.width, hello.height, hello.rtp_base % _POSITIONS) + info


def encode_frames(first_position: int, states: Sequence[FaceState], fps: int) -> bytes:
    """A FRAMES message: `states` from `first_position` on, one every 48000 / fps samples."""
    if not 1 <= len(states) <= MAX_FRAMES:
        raise ValueError(f"a FRAMES message carries 1 to {MAX_FRAMES} states, not {len(states)}")
    head = _FRAMES.pack(FRAMES, VERSION, fps, first_position % _POSITIONS, len(states))
    return head + b"".join(pack_state(s) for s in states)


def encode_cut(position: int) -> bytes:
    """A CUT message."""
    return _CUT.pack(CUT, VERSION, position % _POSITIONS)


def decode(data: bytes) -> Animation:
    """The message in `data`; AnimationError when it is not animation stream v1."""
    if len(data) < 2:
        raise AnimationError(f"{len(data)} bytes is too short for a message")
    kind, version = data[0], data[1]
    if version != VERSION:
        raise AnimationError(f"version {version} is not {VERSION}")
    try:
        if kind == HELLO:
            _, _, fps, width, height, rtp_base = _HELLO.unpack_from(data)
            info = json.loads(data[_HELLO.size :].decode()) if len(data) > _HELLO.size else {}
            if not isinstance(info, dict):
                raise AnimationError("HELLO's JSON is not an object")
            return Hello(_fps(fps), width, height, rtp_base, info)
        if kind == FRAMES:
            _, _, fps, first, count = _FRAMES.unpack_from(data)
            if len(data) != _FRAMES.size + count * RECORD_BYTES:
                raise AnimationError(f"FRAMES of {count} records cannot be {len(data)} bytes")
            records = memoryview(data)[_FRAMES.size :]
            states = tuple(unpack_state(bytes(records[i : i + RECORD_BYTES])) for i in range(0, len(records), 13))
            return Frames(_fps(fps), first, states)
        if kind == CUT:
            if len(data) != _CUT.size:
                raise AnimationError(f"CUT is {_CUT.size} bytes, not {len(data)}")
            return Cut(_CUT.unpack(data)[2])
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnimationError(f"malformed message of type {kind}: {exc}") from exc
    raise AnimationError(f"unknown message type {kind}")


def _fps(fps: int) -> int:
    if fps == 0 or 48_000 % fps:
        raise AnimationError(f"{fps} fps does not divide 48000 samples")
    return fps
