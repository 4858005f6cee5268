"""Opus for the outbound audio: the track encodes its 20 ms mono frames itself, aiortc only packs them.

aiortc's own path costs several times more per frame: a pure-Python audio level over the samples, a hop to
an executor thread, a resampler to stereo and a 96 kbps complexity-10 encode. A track that hands out
`av.Packet`s skips all of it: aiortc then calls `pack()` inline on the event loop.
"""

from __future__ import annotations

import fractions
from typing import Any

import av
from aiortc.codecs.base import Encoder
from av.audio.codeccontext import AudioCodecContext
from av.frame import Frame

from liveavatar.media import AUDIO_RATE

BITRATE = 32_000
"""Target for speech (VBR): Piper speech comes out at ~42 kbps, silence at ~1.2 kbps (3-byte packets)."""
COMPLEXITY = 5
"""Below 7, where libopus adds its speech/music analysis (~3x the cost); on speech ~77 us a frame."""
APPLICATION = "audio"
"""'voip' runs SILK: ~2x the cost on speech, ~3x on silence, and ~14 kbps for digital silence."""
TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class SpeechOpusEncoder:
    """48 kHz mono s16 20 ms frames -> one Opus packet each, stamped with the frame's pts; one per track.

    Mono is fine in WebRTC: Opus is signalled opus/48000/2 and every decoder plays mono packets. The encoder
    lives as long as the track, so its 312-sample lookahead (6.5 ms) is paid once, as with aiortc's.
    """

    def __init__(self) -> None:
        self._codec = open_codec()
        self._last_silent: bytes | None = None
        self._silence: bytes | None = None
        """The packet libopus has settled on for digital silence, once it gave the same one twice in a row."""

    def encode(self, frame: av.AudioFrame, *, silent: bool = False) -> av.Packet[Any]:
        """One 20 ms frame (pts in samples) -> its packet, with the frame's pts and time base.

        `silent`: the frame is digital silence (all zeros); after sound the encoder rings out (~13 frames after
        a tone), then gives one packet for silence again and again, which `repeat_silence` then hands out.
        """
        packets = self._codec.encode(frame)
        # libopus gives one packet per 20 ms frame at once (its lookahead shows as pts - 312, not a delay)
        packet = packets[0] if packets else av.Packet()
        packet.pts = frame.pts
        packet.time_base = frame.time_base or TIME_BASE
        if not silent:
            self._last_silent = self._silence = None
        else:
            data = bytes(packet)
            self._silence = data if data == self._last_silent else None
            self._last_silent = data
        return packet

    def repeat_silence(self, pts: int) -> av.Packet[Any] | None:
        """The settled packet for one more frame of digital silence, without running libopus; None if unsettled.

        An idle session sends silence 50 times a second: this costs ~6 us a frame instead of ~55. The
        encoder does not see those frames, which leaves it where it was: after silence.
        """
        if self._silence is None:
            return None
        packet = av.Packet(self._silence)
        packet.pts = pts
        packet.time_base = TIME_BASE
        return packet


def open_codec(
    bitrate: int = BITRATE, complexity: int = COMPLEXITY, application: str = APPLICATION
) -> AudioCodecContext:
    """A libopus encoder for 48 kHz mono s16 20 ms frames (the settings are arguments for bench/audio.py)."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, AudioCodecContext)
    codec.bit_rate = bitrate
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = AUDIO_RATE
    codec.options = {"application": application, "compression_level": str(complexity)}
    return codec


class OpusPacker(Encoder):
    """The audio sender's encoder when its track hands out Opus packets: payload and RTP timestamp only.

    Installed in place of aiortc's OpusEncoder (which would open a libopus encoder and a resampler it never
    uses). Sends no audio-level header extension: nothing here reads it (browsers' stats measure the
    decoded sound), and it is optional per packet.
    """

    def __init__(self) -> None:
        self.packed = 0
        """Packets packed so far: the sender sends each as one RTP packet, in order."""
        self._pts = (0, 0)

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """Not used: the track encodes; a frame here means a track that does not."""
        raise TypeError("OpusPacker packs Opus packets; this track hands out raw frames")

    def pack(self, packet: av.Packet[Any]) -> tuple[list[bytes], int]:
        """The packet's payload and its RTP timestamp (pts in 1/48000 s); no payload (nothing sent) if empty."""
        if packet.size == 0:
            return [], 0
        assert packet.pts is not None and packet.time_base == TIME_BASE
        self.packed += 1
        self._pts = (self._pts[1], packet.pts)
        return [bytes(packet)], packet.pts

    def pts_of(self, count: int) -> int | None:
        """The pts of the `count`-th packet packed (1-based), for the last two; else None.

        The sender counts a packet as sent only after its send, which may wait: the one packed last may
        still be on its way.
        """
        if count == self.packed:
            return self._pts[1]
        if count == self.packed - 1 >= 1:
            return self._pts[0]
        return None
