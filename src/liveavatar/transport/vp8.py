"""VP8 encoding tuned for a talking head: libvpx's fastest realtime speed, no denoiser, a modest bitrate."""

from __future__ import annotations

import fractions
import logging

import av
from aiortc import RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import convert_timebase
from av.frame import Frame
from av.video.codeccontext import VideoCodecContext

from liveavatar.media import VIDEO_CLOCK
from liveavatar.transport.tracks import draw_pending
from liveavatar.transport.vp8_repeat import repeat_frame, segmentation_enabled

log = logging.getLogger(__name__)

MIN_BITRATE = 300_000
MAX_BITRATE = 800_000
"""A 512x512 talking head needs ~430 kbps at QMIN; aiortc lets the receiver's estimate take it to 1.5 Mbps."""
START_BITRATE = 600_000
QMIN = 10
"""Finest quantizer: a still or idle head stops at ~47 dB PSNR instead of spending the whole bitrate on
refining it (aiortc: 2), so an idle session sends ~270 kbps in ~38 packets a second (~570 kbps, ~68 at 2)."""
CPU_USED = "-16"
"""libvpx's fastest realtime speed (aiortc: -6): with the denoiser off, 2.5 -> ~0.9 ms per 512x512 frame,
and ~0.3 dB below speed -12 on a talking head."""
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class TalkingHeadVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder and packetiser with cheaper libvpx settings; one per video sender."""

    # The synthetic picture has no camera noise: aiortc's denoiser (noise-sensitivity 4) only costs
    # time and blurs detail. The bitrate follows the receiver's estimate (REMB) within a narrow range,
    # because each change of more than 10% reopens the encoder and starts with a keyframe.

    def __init__(self) -> None:
        super().__init__()
        self._bitrate = START_BITRATE
        self._shown: av.VideoFrame | None = None
        """The frame libvpx coded last, if the receiver has it now."""
        self._segmentation = False

    @property
    def target_bitrate(self) -> int:
        """Target bitrate in bits per second (clamped to MIN_BITRATE..MAX_BITRATE)."""
        return self._bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._bitrate = max(MIN_BITRATE, min(int(bitrate), MAX_BITRATE))

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """One frame -> RTP payloads and their 90 kHz timestamp; a frame the video track handed out undrawn is
        drawn first, here in the encoder's thread.

        The video track hands over the same frame object again when the picture has not changed: unless a
        keyframe is due, that goes out as a hand-made repeat (transport/vp8_repeat.py) instead of through libvpx.
        """
        assert isinstance(frame, av.VideoFrame)
        draw_pending(frame)
        if frame is self._shown and not force_keyframe and not self._reopen(frame):
            data = repeat_frame(frame.width, frame.height, self._segmentation)
        else:
            data = self._encode(frame, force_keyframe)
            self._shown = frame if data else None  # libvpx may drop a frame to hold its bitrate
            self._segmentation = bool(data) and segmentation_enabled(data)
        payloads = self._packetize(data, self.picture_id)
        assert frame.pts is not None and frame.time_base is not None
        timestamp = convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, timestamp

    def _reopen(self, frame: av.VideoFrame) -> bool:
        """Whether libvpx must start again for `frame`: first frame, new size, or a bitrate >10% off."""
        codec = self.codec
        return (
            codec is None
            or frame.width != codec.width
            or frame.height != codec.height
            or abs(self._bitrate - (codec.bit_rate or 0)) > 0.1 * (codec.bit_rate or 0)
        )

    def _encode(self, frame: av.VideoFrame, force_keyframe: bool) -> bytes:
        codec = self.codec
        if codec is None or self._reopen(frame):
            codec = self.codec = _open_codec(frame.width, frame.height, self._bitrate)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return b"".join(bytes(packet) for packet in codec.encode(frame))


def _open_codec(width: int, height: int, bitrate: int) -> VideoCodecContext:
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, VideoCodecContext)
    codec.width, codec.height = width, height
    codec.bit_rate = bitrate
    codec.pix_fmt = "yuv420p"
    codec.gop_size = 3000  # keyframes on request (PLI/FIR) only, as aiortc does
    codec.qmin, codec.qmax = QMIN, 56
    codec.options = {
        "bufsize": str(bitrate),  # a one-second buffer
        "cpu-used": CPU_USED,
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": str(bitrate),  # minrate = maxrate = bit_rate: constant bitrate, as WebRTC expects
        "maxrate": str(bitrate),
        "noise-sensitivity": "0",
        "overshoot-pct": "15",
        "partitions": "0",
        "static-thresh": "1",
        "undershoot-pct": "100",
    }
    codec.thread_count = 1  # one session per core slice: threads only add hand-offs at 512x512
    return codec


def use_encoder(sender: RTCRtpSender, encoder: Encoder) -> bool:
    """Have `sender` encode with `encoder` instead of the one aiortc would pick on its first frame.

    aiortc has no hook for this: its sender creates the encoder lazily into a private slot, which stays
    empty until the first frame, so filling it before then is enough. Returns False (and aiortc keeps its
    own encoder) if a newer aiortc no longer has that slot.
    """
    slot = "_RTCRtpSender__encoder"
    if getattr(sender, slot, "missing") is not None:
        log.warning("aiortc's sender has no empty encoder slot: it keeps its own, not %s", type(encoder).__name__)
        return False
    setattr(sender, slot, encoder)
    return True
