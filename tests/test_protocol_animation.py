"""Animation stream v1: the shared test vectors (tests/vectors/animation.json, read by the browser's decoder
test too) encode and decode exactly; quantisation stays below a renderer pixel; malformed input is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liveavatar.protocol.animation import (
    MAX_FRAMES,
    AnimationError,
    Cut,
    Frames,
    Hello,
    decode,
    encode_cut,
    encode_frames,
    encode_hello,
    pack_state,
    unpack_state,
)
from liveavatar.render.face import FaceState
from liveavatar.render.renderer import MAX_ROLL, MAX_SHIFT, MAX_TURN

VECTORS = json.loads((Path(__file__).parent / "vectors" / "animation.json").read_text())
FIELDS = ("blink", "yaw", "pitch", "roll", "dx", "dy", "brows", "smile")


def state_of(values: dict[str, Any]) -> FaceState:
    return FaceState(mouth=np.array(values["mouth"], dtype=np.float32), **{k: values[k] for k in FIELDS})


def plain(state: FaceState) -> dict[str, Any]:
    return {"mouth": [float(w) for w in state.mouth], **{k: float(getattr(state, k)) for k in FIELDS}}


def assert_state(got: FaceState, want: dict[str, Any]) -> None:
    assert np.allclose(got.mouth, want["mouth"], atol=1e-6)
    for key in FIELDS:
        assert getattr(got, key) == pytest.approx(want[key], abs=1e-6), key


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors_encode_and_decode(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    message = decode(data)
    if vector["type"] == "HELLO":
        assert message == Hello(vector["fps"], vector["width"], vector["height"], vector["rtp_base"], vector["info"])
        assert encode_hello(message) == data
    elif vector["type"] == "FRAMES":
        assert isinstance(message, Frames)
        assert (message.fps, message.first_position) == (vector["fps"], vector["first_position"])
        assert len(message.states) == len(vector["decoded"])
        for got, want in zip(message.states, vector["decoded"], strict=True):
            assert_state(got, want)
        inputs = [state_of(s) for s in vector["input"]]
        assert encode_frames(vector["first_position"], inputs, vector["fps"]) == data
        # decoding is a fixed point: what the client draws re-encodes to the same bytes
        assert encode_frames(message.first_position, message.states, message.fps) == data
    else:
        assert message == Cut(vector["position"])
        assert encode_cut(vector["position"]) == data


@pytest.mark.parametrize("bad", VECTORS["malformed"], ids=lambda v: v["name"])
def test_malformed_messages_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(AnimationError):
        decode(bytes.fromhex(bad["hex"]))


def test_frame_positions_step_by_the_frame_rate() -> None:
    message = decode(encode_frames(48_000, [FaceState()] * 5, 25))
    assert isinstance(message, Frames)
    assert message.positions() == [48_000, 49_920, 51_840, 53_760, 55_680]


def test_quantisation_error_is_below_a_renderer_pixel() -> None:
    rng = np.random.default_rng(7)
    worst = dict.fromkeys(("mouth", *FIELDS), 0.0)
    for _ in range(500):
        state = FaceState(
            mouth=rng.uniform(0, 1, 5).astype(np.float32),
            blink=float(rng.uniform(0, 1)),
            yaw=float(rng.uniform(-MAX_TURN, MAX_TURN)),
            pitch=float(rng.uniform(-MAX_TURN, MAX_TURN)),
            roll=float(rng.uniform(-MAX_ROLL, MAX_ROLL)),
            dx=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
            dy=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
            brows=float(rng.uniform(-1, 1)),
            smile=float(rng.uniform(-1, 1)),
        )
        back = unpack_state(pack_state(state))
        worst["mouth"] = max(worst["mouth"], float(np.abs(back.mouth - state.mouth).max()))
        for key in FIELDS:
            worst[key] = max(worst[key], abs(getattr(back, key) - getattr(state, key)))
    # half a quantisation step at most: 1/510 of a weight, 0.04 degrees of turn, 0.024 px of shift
    assert worst["mouth"] <= 0.5 / 255 + 1e-6
    assert worst["dx"] <= 0.5 * MAX_SHIFT / 127 + 1e-9 and worst["dy"] <= 0.5 * MAX_SHIFT / 127 + 1e-9
    assert worst["yaw"] <= 0.5 * MAX_TURN / 127 + 1e-9 and worst["roll"] <= 0.5 * MAX_ROLL / 127 + 1e-9
    assert worst["smile"] <= 0.5 / 127 + 1e-9


def test_values_beyond_the_renderers_clamps_are_clamped() -> None:
    back = unpack_state(pack_state(FaceState(yaw=40.0, roll=-20.0, dx=100.0, blink=2.0, smile=-5.0)))
    assert (back.yaw, back.roll, back.dx, back.blink, back.smile) == (MAX_TURN, -MAX_ROLL, MAX_SHIFT, 1.0, -1.0)


def test_a_frames_message_carries_one_to_max_frames_states() -> None:
    with pytest.raises(ValueError):
        encode_frames(0, [], 25)
    with pytest.raises(ValueError):
        encode_frames(0, [FaceState()] * (MAX_FRAMES + 1), 25)
