"""The face state a renderer draws: the contract between lip-sync, motion and the renderer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

MOUTH_BASES: tuple[str, ...] = ("jaw_open", "lips_wide", "lips_round", "lips_closed", "lower_lip_tuck")
"""Mouth deformations the renderer knows; every viseme is a mix of these (weights 0..1)."""

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happiness", "sadness", "surprise", "contempt")


def rest_mouth() -> npt.NDArray[np.float32]:
    """Mouth weights of a closed, relaxed mouth."""
    return np.zeros(len(MOUTH_BASES), dtype=np.float32)


@dataclass
class FaceState:
    """Everything that varies from one video frame to the next."""

    mouth: npt.NDArray[np.float32] = field(default_factory=rest_mouth)
    """Weights over MOUTH_BASES."""
    blink: float = 0.0
    """0 = eyes open, 1 = closed."""
    yaw: float = 0.0
    """Head rotation in degrees: yaw (left/right), pitch (nod, + = down), roll (tilt)."""
    pitch: float = 0.0
    roll: float = 0.0
    dx: float = 0.0
    """Head/body offset in pixels of the output frame (sway, breathing)."""
    dy: float = 0.0
    brows: float = 0.0
    """-1 = frown (brows down and together), +1 = raised."""
    smile: float = 0.0
    """-1 = mouth corners down, +1 = corners up (smile)."""
