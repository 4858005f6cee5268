"""Array types and the smoothstep curve shared by the render modules."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def smoothstep(a: float, b: float, x: F64) -> F64:
    """0 up to a, 1 from b on, a smooth S-curve in between."""
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return np.asarray(t * t * (3 - 2 * t), dtype=np.float64)
