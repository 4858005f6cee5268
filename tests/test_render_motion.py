"""Idle motion, actions and expressions: deterministic per seed, natural blinks, everything fades back."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from liveavatar.errors import ParamError
from liveavatar.render.face import EXPRESSIONS, MOUTH_BASES, FaceState
from liveavatar.render.motion import ACTIONS, Motion

FPS = 25


def states(motion: Motion, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rows = []
    for t in times:
        s = motion.apply(FaceState(), float(t))
        rows.append([s.blink, s.yaw, s.pitch, s.roll, s.dx, s.dy, s.brows, s.smile])
    return np.array(rows)


def test_same_seed_same_motion_in_any_order() -> None:
    times = np.arange(0, 20, 1 / FPS)
    forward = states(Motion(seed=11), times)
    backward = states(Motion(seed=11), times[::-1])[::-1]
    assert np.array_equal(forward, backward)
    assert not np.array_equal(forward, states(Motion(seed=12), times))


def test_idle_motion_is_small_and_alive() -> None:
    s = states(Motion(seed=3), np.arange(0, 30, 1 / FPS))
    yaw, pitch, roll, dx, dy = (s[:, i] for i in range(1, 6))
    for channel, limit in ((yaw, 4.0), (pitch, 3.0), (roll, 3.0), (dx, 3.0), (dy, 2.0)):
        assert np.abs(channel).max() < limit
        assert channel.std() > 0.05  # it does move
    assert np.abs(np.diff(yaw)).max() < 0.2  # smoothly: no jumps between frames
    assert (s[:, 6] == 0).all() and (s[:, 7] == 0).all()  # no expression without a command


def test_blinks_come_at_natural_intervals() -> None:
    motion = Motion(seed=5)
    blinks = motion.blinks(60.0)
    assert 10 <= len(blinks) <= 32
    starts = [s for s, _ in blinks]
    gaps = np.diff(starts)
    doubles = gaps < 0.6  # the second half of a double blink
    assert doubles.sum() <= 0.3 * len(gaps)
    singles = gaps[~doubles]
    assert singles.min() >= 2.0 and singles.max() <= 6.5
    for start, length in blinks:
        assert 0.15 <= length <= 0.25
        # sampled at 25 fps, every blink shows at least one (nearly) closed frame
        frames = np.arange(np.ceil(start * FPS), np.floor((start + length) * FPS) + 1) / FPS
        assert max(motion.blink(float(t)) for t in frames) >= 0.8
    assert motion.blink(starts[0] - 0.05) == 0.0


@pytest.mark.parametrize("name", ACTIONS)
def test_actions_move_and_settle(name: str) -> None:
    times = np.arange(0, 5, 1 / FPS)
    idle = states(Motion(seed=1), times)
    motion = Motion(seed=1)
    motion.start_action(name, 1.0)
    acting = states(motion, times)
    change = np.abs(acting - idle)[:, 1:]  # not the blink
    assert change[(times > 1.0) & (times < 2.5)].max() > 1.0 or change[:, 5:].max() > 0.3
    assert change[times < 1.0].max() == 0.0
    assert change[times > 3.2].max() < 1e-9


@pytest.mark.parametrize("name", EXPRESSIONS)
def test_expressions_fade_in_and_out(name: str) -> None:
    motion = Motion(seed=2)
    motion.start_expression(name, 0.0)
    peak = motion.apply(FaceState(), 1.5)
    assert abs(peak.brows) + abs(peak.smile) > 0.2
    early = motion.apply(FaceState(), 0.1)
    assert abs(early.brows) + abs(early.smile) < abs(peak.brows) + abs(peak.smile)
    late = motion.apply(FaceState(), 4.0)
    assert late.brows == 0.0 and late.smile == 0.0


def test_a_new_expression_replaces_the_old_one() -> None:
    motion = Motion(seed=2)
    motion.start_expression("happiness", 0.0)
    motion.start_expression("angry", 1.0)
    later = motion.apply(FaceState(), 2.5)
    assert later.brows < -0.5 and later.smile < 0  # angry, with happiness gone


def test_unknown_names_are_refused() -> None:
    motion = Motion()
    with pytest.raises(ParamError, match="unknown action"):
        motion.start_action("moonwalk", 0.0)
    with pytest.raises(ParamError, match="unknown expression"):
        motion.start_expression("bored", 0.0)


def test_speech_mouth_is_kept() -> None:
    mouth = np.array([0.5, 0.1, 0.2, 0.0, 0.3], np.float32)
    motion = Motion(seed=4)
    out = motion.apply(FaceState(mouth=mouth), 2.0)
    assert np.array_equal(out.mouth, mouth)
    motion.start_expression("surprise", 2.0)
    jaw = MOUTH_BASES.index("jaw_open")
    assert motion.apply(FaceState(mouth=np.zeros(5, np.float32)), 3.5).mouth[jaw] > 0.1
