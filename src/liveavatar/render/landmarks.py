"""MediaPipe face-mesh landmark indices the builder and the renderer share, and the face's size from them."""

from __future__ import annotations

import numpy as np

from liveavatar.render.arrays import F32, F64

N_LANDMARKS = 478
"""Landmarks per face with refined eyes and irises."""

UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
"""Upper lip's inner edge, corner to corner (78 and 308 are the inner corners)."""
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
"""Lower lip's inner edge, the same corners and columns as UPPER_INNER."""
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
"""Upper lip's outer edge, corner to corner (61 and 291 are the outer corners)."""
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
"""Lower lip's outer edge, the same corners as UPPER_OUTER."""
UPPER_LIP = (
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    184,
    74,
    73,
    72,
    11,
    302,
    303,
    304,
    408,
    183,
    42,
    41,
    38,
    12,
    268,
    271,
    272,
    407,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
)
"""The upper lip's landmarks, corners left out."""
LOWER_LIP = (
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    77,
    90,
    180,
    85,
    16,
    315,
    404,
    320,
    307,
    96,
    89,
    179,
    86,
    15,
    316,
    403,
    319,
    325,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
)
"""The lower lip's landmarks, corners left out."""
SEMI_INNER = ((62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292), (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292))
"""The lip landmarks one ring out from the inner edges: (upper, lower)."""
EYES = (
    ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133)),
    ((362, 398, 384, 385, 386, 387, 388, 466, 263), (362, 382, 381, 380, 374, 373, 390, 249, 263)),
)
"""Per eye (the picture's left first): upper and lower lid edges, left to right in the picture."""
IRIS = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
"""Per eye: iris centre, then four points on its rim (refined landmarks)."""
BROWS = ((70, 63, 105, 66, 107, 46, 53, 52, 65, 55), (336, 296, 334, 293, 300, 285, 295, 282, 283, 276))
"""Per eye: the brow's upper edge (five points), then its lower edge (five)."""
OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
"""The face's outline, clockwise from the top of the forehead (10)."""


def face_height(lm: F32 | F64) -> float:
    """Forehead landmark to chin, in pixels."""
    return float(np.linalg.norm(lm[152, :2] - lm[10, :2]))


def mouth_width(lm: F32 | F64) -> float:
    """Outer mouth corner to corner, in pixels."""
    return float(np.linalg.norm(lm[291, :2] - lm[61, :2]))
