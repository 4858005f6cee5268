"""A VP8 frame that shows the previous picture again, written by hand instead of encoded (RFC 6386).

An idle avatar repeats two frames in three (session/avatar.py). libvpx encodes a repeat as a frame like any
other (~0.7 ms at 512x512, to refine what it sent before); this one costs nothing to make and 43 bytes to send
at 512x512: an inter frame whose every macroblock copies the last frame unmoved (ZEROMV from LAST, no residual),
with the loop filter off, and which updates nothing a later frame depends on (no reference buffer,
probabilities restored after it). The encoder's idea of what the decoder holds stays true, so its next frame
decodes as it would have without the repeat in between.
"""

from __future__ import annotations

import functools

COEFF_UPDATE_PROBS = bytes.fromhex(
    "".join(
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "b0f6ffffffffffffffffffdff1fcfffffffffffffffff9fdfdffffffffffffffff",
            "fff4fcffffffffffffffffeafefefffffffffffffffffdffffffffffffffffffff",
            "fff6feffffffffffffffffeffdfefffffffffffffffffefffeffffffffffffffff",
            "fff8fefffffffffffffffffbfffeffffffffffffffffffffffffffffffffffffff",
            "fffdfefffffffffffffffffbfefefffffffffffffffffefffeffffffffffffffff",
            "fffefdfffefffffffffffffafffefffefffffffffffffeffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "d9ffffffffffffffffffffe1fcf1fdfffffeffffffffeafaf1fafdfffdfeffffff",
            "fffeffffffffffffffffffdffefeffffffffffffffffeefdfefeffffffffffffff",
            "fff8fefffffffffffffffff9feffffffffffffffffffffffffffffffffffffffff",
            "fffdfffffffffffffffffff7feffffffffffffffffffffffffffffffffffffffff",
            "fffdfefffffffffffffffffcffffffffffffffffffffffffffffffffffffffffff",
            "fffefefffffffffffffffffdffffffffffffffffffffffffffffffffffffffffff",
            "fffefdfffffffffffffffffafffffffffffffffffffffeffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "bafbfaffffffffffffffffeafbf4fefffffffffffffffbfbf3fdfefffeffffffff",
            "fffdfeffffffffffffffffecfdfefffffffffffffffffbfdfdfefeffffffffffff",
            "fffefefffffffffffffffffefefeffffffffffffffffffffffffffffffffffffff",
            "fffefffffffffffffffffffefefffffffffffffffffffeffffffffffffffffffff",
            "fffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "f8fffffffffffffffffffffafefcfefffffffffffffff8fef9fdffffffffffffff",
            "fffdfdfffffffffffffffff6fdfdfffffffffffffffffcfefbfefeffffffffffff",
            "fffefcfffffffffffffffff8fefdfffffffffffffffffdfffefeffffffffffffff",
            "fffbfefffffffffffffffff5fbfefffffffffffffffffdfdfeffffffffffffffff",
            "fffbfdfffffffffffffffffcfdfefffffffffffffffffffeffffffffffffffffff",
            "fffcfffffffffffffffffff9fffefffffffffffffffffffffeffffffffffffffff",
            "fffffdfffffffffffffffffaffffffffffffffffffffffffffffffffffffffffff",
            "fffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffff",
        )
    )
)
"""RFC 6386 13.4 `coeff_update_probs[4][8][3][11]`, one line per block type and band: the probability that
each token probability is *not* updated, which a frame must code even to update none."""

MV_UPDATE_PROBS = bytes(
    [237, 246, 253, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 250, 250, 252, 254, 254]
    + [231, 243, 245, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 251, 251, 254, 254, 254]
)
"""RFC 6386 17.2 `vp8_mv_update_probs[2][19]`."""

ZEROMV_PROBS = (7, 14, 135, 60, 159, 234)
"""RFC 6386 16.3 `vp8_mode_contexts[n][0]`: the probability of ZEROMV when n counts the zero motion vectors
around a macroblock (2 above, 2 left, 1 above-left)."""


TOKEN_PARTITION = b"\0"
"""The token partition: read by no macroblock, but FFmpeg refuses a frame whose last partition is empty."""


class BoolEncoder:
    """VP8's boolean entropy coder (RFC 6386 7.3)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._range = 255
        self._bottom = 0
        self._bit_count = 24

    def bool(self, value: bool, prob: int) -> None:
        """Code one bit that is 0 with probability prob / 256."""
        split = 1 + (((self._range - 1) * prob) >> 8)
        if value:
            self._bottom += split
            self._range -= split
        else:
            self._range = split
        while self._range < 128:
            self._range <<= 1
            if self._bottom & (1 << 31):
                self._carry()
            self._bottom = (self._bottom << 1) & 0xFFFFFFFF
            self._bit_count -= 1
            if self._bit_count == 0:
                self.out.append(self._bottom >> 24)
                self._bottom &= 0xFFFFFF
                self._bit_count = 8

    def literal(self, value: int, bits: int) -> None:
        """Code an unsigned `bits`-bit number, most significant bit first, each bit at even odds."""
        for shift in range(bits - 1, -1, -1):
            self.bool(bool((value >> shift) & 1), 128)

    def flush(self) -> bytes:
        """The coded bytes, padded so that a decoder can read past the last bit."""
        count, value = self._bit_count, self._bottom
        if value & (1 << (32 - count)):
            self._carry()
        value = (value << (count & 7)) & 0xFFFFFFFF
        value = (value << (8 * (count >> 3))) & 0xFFFFFFFF
        for _ in range(4):
            self.out.append(value >> 24)
            value = (value << 8) & 0xFFFFFFFF
        return bytes(self.out)

    def _carry(self) -> None:
        i = len(self.out) - 1
        while i >= 0 and self.out[i] == 255:
            self.out[i] = 0
            i -= 1
        self.out[i] += 1


@functools.cache
def repeat_frame(width: int, height: int, segmentation: bool) -> bytes:
    """A shown inter frame, for a stream of `width` x `height`, whose picture is the last frame's.

    `segmentation`: whether the stream's last frame had it on; the repeat then keeps it on, with the map and
    the segment features unchanged, so that a later frame may still rely on them.
    """
    coder = BoolEncoder()
    coder.literal(segmentation, 1)
    if segmentation:
        coder.literal(0, 2)  # neither the map nor the segment features change
    coder.literal(0, 1)  # filter type
    coder.literal(0, 6)  # loop filter level 0: no filtering at all
    coder.literal(0, 3)  # sharpness
    coder.literal(0, 1)  # no loop filter adjustments
    coder.literal(0, 2)  # one token partition
    coder.literal(0, 7)  # quantizer index (nothing is dequantized)
    coder.literal(0, 5)  # no quantizer deltas
    coder.literal(0, 1)  # golden frame not refreshed
    coder.literal(0, 1)  # altref not refreshed
    coder.literal(0, 2)  # nothing copied to golden
    coder.literal(0, 2)  # nothing copied to altref
    coder.literal(0, 2)  # sign biases
    coder.literal(0, 1)  # probabilities restored after this frame
    coder.literal(0, 1)  # the last-frame buffer is not refreshed
    for prob in COEFF_UPDATE_PROBS:
        coder.bool(False, prob)
    coder.literal(1, 1)  # macroblocks may be marked as having no coefficients...
    coder.literal(1, 8)  # ...and almost all are (prob_skip_false)
    coder.literal(1, 8)  # prob_intra: almost all are inter
    coder.literal(255, 8)  # prob_last: almost all refer to the last frame
    coder.literal(128, 8)  # prob_gf (unused)
    coder.literal(0, 2)  # no intra mode probability updates
    for prob in MV_UPDATE_PROBS:
        coder.bool(False, prob)
    rows, cols = (height + 15) // 16, (width + 15) // 16
    for row in range(rows):
        for col in range(cols):
            coder.bool(True, 1)  # no coefficients
            coder.bool(True, 1)  # inter
            coder.bool(False, 255)  # from the last frame
            zeros = 2 * (row > 0) + 2 * (col > 0) + (row > 0 and col > 0)
            coder.bool(False, ZEROMV_PROBS[zeros])  # ZEROMV
    first = coder.flush()
    # frame tag: inter frame, version 0, shown, first partition size; then the (empty) token partition
    tag = 1 | (1 << 4) | (len(first) << 5)
    return tag.to_bytes(3, "little") + first + TOKEN_PARTITION


class BoolDecoder:
    """VP8's boolean entropy decoder (RFC 6386 7.3), for reading frame headers."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._value = int.from_bytes(data[:2].ljust(2, b"\0"), "big")
        self._pos = 2
        self._range = 255
        self._bit_count = 0

    def bool(self, prob: int) -> bool:
        """Read one bit that is 0 with probability prob / 256."""
        split = 1 + (((self._range - 1) * prob) >> 8)
        if self._value >= split << 8:
            bit = True
            self._range -= split
            self._value -= split << 8
        else:
            bit = False
            self._range = split
        while self._range < 128:
            self._value <<= 1
            self._range <<= 1
            self._bit_count += 1
            if self._bit_count == 8:
                self._bit_count = 0
                self._value |= self._data[self._pos] if self._pos < len(self._data) else 0
                self._pos += 1
        return bit

    def literal(self, bits: int) -> int:
        """Read an unsigned `bits`-bit number, most significant bit first."""
        value = 0
        for _ in range(bits):
            value = value << 1 | self.bool(128)
        return value


def segmentation_enabled(frame: bytes) -> bool:
    """Whether a coded VP8 frame turns segmentation on (later frames may then rely on its segment map)."""
    keyframe = not frame[0] & 1
    header = BoolDecoder(frame[10:] if keyframe else frame[3:])
    if keyframe:
        header.literal(2)  # colour space, clamping
    return bool(header.literal(1))
