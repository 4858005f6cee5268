"""Idle motion (blinks, breathing, head sway), actions and expressions, as functions of session time."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from liveavatar.errors import ParamError
from liveavatar.render.face import EXPRESSIONS, MOUTH_BASES, FaceState

ACTIONS: tuple[str, ...] = ("hand_wave", "cheer", "thumbs_up", "pump_fists", "nod", "shake", "waft_left", "waft_right")

BLINK_GAP = (2.0, 6.0)
"""Seconds between blinks (a double blink counts as one)."""
BLINK_LENGTH = (0.15, 0.25)
DOUBLE_BLINK = 0.12
"""Share of blinks followed at once by a second one."""
BREATH_PERIOD = 4.2
BREATH_PX = 0.7
"""Peak rise of head and shoulders when breathing in, in pixels."""


@dataclass(frozen=True)
class Pose:
    """Offsets that motion adds to a FaceState (degrees, pixels, -1..1 for brows and smile)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    brows: float = 0.0
    smile: float = 0.0
    jaw: float = 0.0

    def __add__(self, o: Pose) -> Pose:
        return Pose(*(a + b for a, b in zip(self.astuple(), o.astuple(), strict=True)))

    def __mul__(self, k: float) -> Pose:
        return Pose(*(a * k for a in self.astuple()))

    def astuple(self) -> tuple[float, ...]:
        """The fields in order."""
        return (self.yaw, self.pitch, self.roll, self.dx, self.dy, self.brows, self.smile, self.jaw)


def _smooth(a: float, b: float, x: float) -> float:
    t = min(max((x - a) / (b - a), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _bell(t: float, length: float) -> float:
    """0 -> 1 -> 0 over `length` seconds, smooth at both ends."""
    return math.sin(math.pi * t / length) ** 2 if 0.0 <= t <= length else 0.0


def _wave(t: float, length: float, hz: float) -> float:
    """An oscillation that fades in and out over `length` seconds."""
    return _bell(t, length) * math.sin(2 * math.pi * hz * t)


def _turn(t: float, length: float, side: float) -> Pose:
    """Glance and lean toward one side (-1 = left of the picture), then back."""
    k = _smooth(0.0, 0.45, t) * (1 - _smooth(length - 0.7, length, t))
    return Pose(yaw=6.0 * side * k, roll=2.5 * side * k, dx=3.0 * side * k, smile=0.35 * k, brows=0.2 * k)


ACTION_SHAPES: dict[str, tuple[float, Callable[[float], Pose]]] = {
    "nod": (
        1.3,
        lambda t: Pose(pitch=7.0 * max(_wave(t, 1.3, 1.55), -0.3) + 1.5 * _bell(t, 1.3), brows=0.1 * _bell(t, 1.3)),
    ),
    "shake": (
        1.5,
        lambda t: Pose(yaw=7.0 * _wave(t, 1.5, 1.7), roll=0.8 * _wave(t, 1.5, 1.7), brows=-0.1 * _bell(t, 1.5)),
    ),
    "hand_wave": (
        1.9,
        lambda t: Pose(
            roll=3.0 * _wave(t, 1.9, 1.6),
            yaw=1.5 * _wave(t, 1.9, 0.8),
            smile=0.7 * _bell(t, 1.9) ** 0.5,
            brows=0.4 * _bell(t, 1.9),
        ),
    ),
    "cheer": (
        1.8,
        lambda t: Pose(
            pitch=-4.0 * _bell(t, 1.8) + 1.2 * _wave(t, 1.8, 3.0),
            dy=-2.0 * _bell(t, 1.8) * abs(math.sin(6 * t)),
            smile=1.0 * _bell(t, 1.8) ** 0.5,
            brows=0.8 * _bell(t, 1.8),
        ),
    ),
    "thumbs_up": (
        1.4,
        lambda t: Pose(
            pitch=5.0 * _bell(t - 0.15, 0.6) - 1.0 * _bell(t - 0.75, 0.5),
            smile=0.75 * _bell(t, 1.4) ** 0.5,
            brows=0.3 * _bell(t, 1.4),
        ),
    ),
    "pump_fists": (
        1.5,
        lambda t: Pose(
            dy=2.5 * _bell(t, 1.5) * math.sin(2 * math.pi * 2.6 * t),
            pitch=2.5 * _wave(t, 1.5, 2.6),
            smile=0.8 * _bell(t, 1.5) ** 0.5,
            brows=0.5 * _bell(t, 1.5),
        ),
    ),
    "waft_left": (2.0, lambda t: _turn(t, 2.0, -1.0)),
    "waft_right": (2.0, lambda t: _turn(t, 2.0, 1.0)),
}
"""Each action: (seconds, pose over time). The avatar has no hands: these are the nearest head and face motions."""

EXPRESSION_POSES: dict[str, Pose] = {
    "angry": Pose(brows=-1.0, smile=-0.45, pitch=1.5),
    "disgust": Pose(brows=-0.6, smile=-0.65, roll=-1.0, yaw=-2.0),
    "fear": Pose(brows=0.9, smile=-0.35, pitch=-1.5, jaw=0.12),
    "happiness": Pose(brows=0.3, smile=0.9),
    "sadness": Pose(brows=0.15, smile=-0.7, pitch=3.0),
    "surprise": Pose(brows=1.0, pitch=-2.0, jaw=0.3),
    "contempt": Pose(brows=-0.2, smile=0.25, roll=2.0, yaw=3.0, pitch=-1.5),
}
EXPRESSION_TIMES = (0.5, 2.0, 0.9)
"""Seconds to fade in, to hold, to fade out."""


class Motion:
    """Blinks, breathing, head sway, actions and expressions as functions of time; one seed, one motion."""

    # Sampling order and rate do not matter: blinks are drawn from the seed in time order, on demand.

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        r = self._rng
        self._sway = [
            (amp, [(float(r.uniform(0.05, 0.3)), float(r.uniform(0, 2 * math.pi))) for _ in range(3)])
            for amp in (1.6, 1.1, 0.9, 1.0, 0.3)  # yaw, pitch, roll (degrees), dx, dy (pixels)
        ]
        self._breath_phase = float(r.uniform(0, BREATH_PERIOD))
        self._blinks: list[tuple[float, float]] = []
        self._blink_until = float(r.uniform(0.5, 2.5))
        self._actions: list[tuple[str, float]] = []
        self._expressions: list[tuple[str, float, float]] = []

    def start_action(self, name: str, t: float) -> None:
        """Play an action (one of ACTIONS) from time t."""
        if name not in ACTION_SHAPES:
            raise ParamError(f"unknown action {name!r}; one of {', '.join(ACTIONS)}")
        self._actions = [(n, s) for n, s in self._actions if n != name and t - s < ACTION_SHAPES[n][0]]
        self._actions.append((name, t))

    def start_expression(self, name: str, t: float) -> None:
        """Show an expression (one of EXPRESSIONS) from time t; it fades in, holds, and fades out."""
        if name not in EXPRESSION_POSES:
            raise ParamError(f"unknown expression {name!r}; one of {', '.join(EXPRESSIONS)}")
        fade_in, hold, fade_out = EXPRESSION_TIMES
        kept = []
        for n, s, release in self._expressions:
            if t - s < release + fade_out:
                kept.append((n, s, min(release, max(t - s, 0.0))))  # the old one lets go now
        self._expressions = kept + [(name, t, fade_in + hold)]

    def apply(self, state: FaceState, t: float) -> FaceState:
        """The state with blink, head motion, breathing, brows and smile added for time t."""
        pose = self._idle(t) + self._action_pose(t) + self._expression_pose(t)
        mouth = np.asarray(state.mouth, dtype=np.float32).copy()
        if pose.jaw > 0:
            j = MOUTH_BASES.index("jaw_open")
            mouth[j] = max(float(mouth[j]), pose.jaw)
        return replace(
            state,
            mouth=mouth,
            blink=min(1.0, max(state.blink, self.blink(t))),
            yaw=state.yaw + pose.yaw,
            pitch=state.pitch + pose.pitch,
            roll=state.roll + pose.roll,
            dx=state.dx + pose.dx,
            dy=state.dy + pose.dy,
            brows=min(1.0, max(-1.0, state.brows + pose.brows)),
            smile=min(1.0, max(-1.0, state.smile + pose.smile)),
        )

    def blink(self, t: float) -> float:
        """How closed the eyes are at time t (0 open .. 1 closed)."""
        self._schedule(t + 1.0)
        i = bisect.bisect_right(self._blinks, (t, math.inf)) - 1
        if i < 0:
            return 0.0
        start, length = self._blinks[i]
        return _blink_shape((t - start) / length) if t < start + length else 0.0

    def blinks(self, until: float) -> list[tuple[float, float]]:
        """(start, seconds) of every blink up to a time."""
        self._schedule(until)
        return [b for b in self._blinks if b[0] <= until]

    def _schedule(self, until: float) -> None:
        r = self._rng
        while self._blink_until <= until:
            start = self._blink_until
            length = float(r.uniform(*BLINK_LENGTH))
            self._blinks.append((start, length))
            end = start + length
            if r.random() < DOUBLE_BLINK:
                second = end + float(r.uniform(0.06, 0.14))
                length2 = float(r.uniform(BLINK_LENGTH[0], 0.2))
                self._blinks.append((second, length2))
                end = second + length2
            gap = BLINK_GAP[0] + (BLINK_GAP[1] - BLINK_GAP[0]) * float(r.beta(1.6, 2.2))
            self._blink_until = max(start + gap, end + 0.5)

    def _idle(self, t: float) -> Pose:
        vals = [amp * sum(math.sin(2 * math.pi * f * t + ph) for f, ph in waves) / 1.7 for amp, waves in self._sway]
        phase = 2 * math.pi * (t + self._breath_phase) / BREATH_PERIOD
        breath = -BREATH_PX * (0.5 - 0.5 * math.cos(phase + 0.35 * math.sin(phase)))  # in faster than out
        return Pose(yaw=vals[0], pitch=vals[1], roll=vals[2], dx=vals[3], dy=vals[4] + breath)

    def _action_pose(self, t: float) -> Pose:
        pose = Pose()
        for name, start in self._actions:
            length, shape = ACTION_SHAPES[name]
            if 0.0 <= t - start <= length:
                pose = pose + shape(t - start)
        return pose

    def _expression_pose(self, t: float) -> Pose:
        fade_in, _, fade_out = EXPRESSION_TIMES
        pose = Pose()
        for name, start, release in self._expressions:
            tau = t - start
            level = _smooth(0.0, fade_in, tau) * (1 - _smooth(release, release + fade_out, tau))
            if level > 0:
                pose = pose + EXPRESSION_POSES[name] * level
        return pose


def _blink_shape(x: float) -> float:
    """Lid closure over a blink's length (0..1): quick to close, a short hold, slower to open."""
    if x < 0.3:
        return _smooth(0.0, 0.3, x)
    if x < 0.45:
        return 1.0
    return float(1.0 - _smooth(0.45, 1.0, x) ** 0.8)
