"""The outbound video path: which frames are drawn, repeated frames, and the tuned VP8 encoder."""

from __future__ import annotations

import fractions
import threading

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from liveavatar.media import AUDIO_RATE, VIDEO_FPS, VIDEO_TICKS, ScriptedClock, UnpacedClock
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.background import Background
from liveavatar.render.builder import build_pack
from liveavatar.render.face import FaceState
from liveavatar.render.motion import Motion
from liveavatar.render.pack import AvatarPack
from liveavatar.render.renderer import Renderer
from liveavatar.session.avatar import AvatarSource
from liveavatar.speech.base import SpeechChunk
from liveavatar.transport.tracks import AvatarVideoTrack, Drawing
from liveavatar.transport.vp8 import MAX_BITRATE, MIN_BITRATE, TalkingHeadVp8Encoder, use_encoder
from liveavatar.transport.vp8_repeat import BoolDecoder, BoolEncoder, repeat_frame, segmentation_enabled

Frame = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def pack() -> AvatarPack:
    name, gender, path = builtin_portraits()["astronaut"]
    return build_pack(cv2.imread(str(path)), avatar_id="astronaut", name=name, gender=gender)


def frames(source: AvatarSource, start: int, count: int) -> list[tuple[Frame, bool]]:
    """Frames `start`.. at 25 fps, each copied, with whether the source said it repeats the one before."""
    out: list[tuple[Frame, bool]] = []
    for i in range(start, start + count):
        draw = source.video_picture(i / VIDEO_FPS)
        out.append((draw().copy(), False) if draw is not None else (out[-1][0], True))
    return out


def mean_diff(a: Frame, b: Frame) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_idle_frames_are_drawn_when_the_pose_has_moved(pack: AvatarPack) -> None:
    source = AvatarSource(Renderer(pack), Motion(seed=1))
    shown = frames(source, 0, 250)
    repeated = [r for _, r in shown]
    assert not repeated[0]
    assert 0.4 < sum(repeated) / len(repeated) < 0.8  # idle sway: about every third frame is drawn
    for (before, _), (frame, again) in zip(shown, shown[1:], strict=False):
        if again:
            assert np.array_equal(frame, before)
    # a repeated frame is what drawing its own state would give, to the eye: closer than VP8 gets to either
    # (mean error ~1.4 levels at the ~42 dB it settles to)
    exact = Renderer(pack)
    check = Motion(seed=1)
    for i, (frame, again) in enumerate(shown):
        if again:
            truth = exact.render(check.apply(FaceState(), i / VIDEO_FPS))
            assert mean_diff(frame, truth) < 0.8


def test_blinks_and_speech_are_drawn_every_frame(pack: AvatarPack) -> None:
    motion = Motion(seed=2)
    source = AvatarSource(Renderer(pack), motion)
    start, length = next((s, n) for s, n in motion.blinks(20.0) if s > 1.0)
    first = int(np.ceil(start * VIDEO_FPS))
    frames(source, 0, first)
    blink = frames(source, first, int(length * VIDEO_FPS) - 1)
    assert blink and not any(r for _, r in blink)

    # two seconds of loud speech without phoneme timings: the mouth follows the audio
    t = np.arange(2 * AUDIO_RATE) / AUDIO_RATE
    voice = (9000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)
    begin, end = source.speaker.speak(SpeechChunk("ah", voice, AUDIO_RATE), voice)
    talk = frames(source, int(begin * VIDEO_FPS) + 5, int((end - begin) * VIDEO_FPS) - 10)
    assert sum(r for _, r in talk) <= 1  # the mouth moves every frame while it speaks


def test_a_new_background_is_drawn_at_once(pack: AvatarPack) -> None:
    source = AvatarSource(Renderer(pack), Motion(seed=3))
    frames(source, 0, 10)
    source.set_background(Background.solid("#00ff00"))
    (frame, again), *_ = frames(source, 10, 1)
    assert not again
    assert tuple(int(v) for v in frame[2, 2]) == (0, 255, 0)


async def test_the_track_reuses_a_repeated_frame_with_new_timestamps(pack: AvatarPack) -> None:
    source = AvatarSource(Renderer(pack), Motion(seed=1))
    picture, drawn, threads = source.video_picture, [], set[int]()

    def counted(t: float, can_repeat: bool) -> Drawing | None:
        draw = picture(t, can_repeat)
        drawn.append(draw is not None)
        if draw is None:
            return None

        def traced() -> Frame:
            threads.add(threading.get_ident())
            return draw()

        return traced

    source.video_picture = counted  # type: ignore[method-assign]
    track = AvatarVideoTrack(source, UnpacedClock())
    sent = []
    for _ in range(50):
        frame = await track.recv()
        assert frame.pict_type != av.video.frame.PictureType.I  # a repeat never inherits a keyframe mark
        sent.append((frame.pts, not drawn[-1], id(frame)))
        frame.pict_type = av.video.frame.PictureType.I  # as the sender marks a frame on a keyframe request
    assert [pts for pts, _, _ in sent] == [i * VIDEO_TICKS for i in range(50)]
    repeats = [(prev, cur) for prev, cur in zip(sent, sent[1:], strict=False) if cur[1]]
    assert repeats and all(prev[2] == cur[2] for prev, cur in repeats)  # converted once, sent again
    assert threads and threading.get_ident() not in threads  # drawn off the event loop
    track.stop()


async def test_a_new_track_on_the_source_starts_with_a_drawn_frame(pack: AvatarPack) -> None:
    # a rejoin: the new peer's track has no frame to repeat, even while the picture has not changed
    source = AvatarSource(Renderer(pack), Motion(seed=1))
    clock = ScriptedClock()
    first = AvatarVideoTrack(source, clock)
    shown = await first.recv()
    first.stop()
    again = AvatarVideoTrack(source, clock)
    frame = await again.recv()
    assert frame is not shown
    assert np.array_equal(frame.to_ndarray(), shown.to_ndarray())
    again.stop()


def decode(encoder: TalkingHeadVp8Encoder, decoder: Vp8Decoder, frame: av.VideoFrame, key: bool) -> tuple[Frame, bool]:
    payloads, timestamp = encoder.encode(frame, key)
    data = b"".join(vp8_depayload(p) for p in payloads)
    (out,) = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    assert isinstance(out, av.VideoFrame)
    return np.asarray(out.to_ndarray(), np.uint8), not data[0] & 1  # VP8: bit 0 clear = keyframe


def test_the_encoder_streams_a_talking_head_cleanly(pack: AvatarPack) -> None:
    source = AvatarSource(Renderer(pack), Motion(seed=4))
    encoder, decoder = TalkingHeadVp8Encoder(), Vp8Decoder()
    keys, quality = [], []
    for i in range(60):
        yuv = np.asarray(cv2.cvtColor(source.video_frame(i / VIDEO_FPS), cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = i * VIDEO_TICKS, fractions.Fraction(1, 90_000)
        out, key = decode(encoder, decoder, frame, key=i == 30)
        keys.append(key)
        quality.append(cv2.PSNR(out, yuv))  # I420 in and out, in dB
    assert keys[0] and keys[30] and not any(keys[1:30]) and not any(keys[31:])
    assert min(quality) > 30.0 and float(np.mean(quality[-10:])) > 42.0  # settles to a clean picture


async def test_the_encoder_draws_the_frames_the_track_hands_out_undrawn(pack: AvatarPack) -> None:
    # in a session the track only decides the picture; the encoder draws it in its own thread
    drawn = AvatarSource(Renderer(pack), Motion(seed=4))
    track = AvatarVideoTrack(AvatarSource(Renderer(pack), Motion(seed=4)), UnpacedClock())
    track.encoder_draws = True
    encoder, decoder = TalkingHeadVp8Encoder(), Vp8Decoder()
    undrawn = []
    for i in range(8):
        frame = await track.recv()
        undrawn.append(frame.opaque is not None)  # a new picture, not drawn yet (an idle repeat is the last frame)
        out, _ = decode(encoder, decoder, frame, key=False)
        assert frame.opaque is None
        yuv = np.asarray(cv2.cvtColor(drawn.video_frame(i / VIDEO_FPS), cv2.COLOR_BGR2YUV_I420), np.uint8)
        assert np.array_equal(frame.to_ndarray(), yuv)  # the very picture, in the frame's planes
        assert cv2.PSNR(out, yuv) > 30.0
    assert undrawn[0] and not all(undrawn)
    track.stop()


def test_the_encoder_bitrate_stays_in_its_range() -> None:
    encoder = TalkingHeadVp8Encoder()
    encoder.target_bitrate = 5_000_000
    assert encoder.target_bitrate == MAX_BITRATE
    encoder.target_bitrate = 10_000
    assert encoder.target_bitrate == MIN_BITRATE


async def test_a_sender_takes_the_tuned_encoder(pack: AvatarPack) -> None:
    pc = RTCPeerConnection()
    try:
        source = AvatarSource(Renderer(pack), Motion(seed=0))
        sender = pc.addTrack(AvatarVideoTrack(source, UnpacedClock()))
        assert use_encoder(sender, TalkingHeadVp8Encoder())  # aiortc still has the slot it fills
    finally:
        await pc.close()


def test_the_bool_coder_round_trips() -> None:
    rng = np.random.default_rng(5)
    probs = [int(p) for p in rng.integers(1, 256, 5000)]
    bits = [bool(b) for b in rng.random(5000) < 0.5]
    coder = BoolEncoder()
    for bit, prob in zip(bits, probs, strict=True):
        coder.bool(bit, prob)
    coder.literal(0x5A, 7)
    reader = BoolDecoder(coder.flush())
    assert [reader.bool(prob) for prob in probs] == bits
    assert reader.literal(7) == 0x5A


@pytest.mark.parametrize("segmentation", [False, True])
def test_a_repeat_frame_says_what_it_should(segmentation: bool) -> None:
    data = repeat_frame(512, 512, segmentation)
    tag = int.from_bytes(data[:3], "little")
    assert tag & 1 and tag >> 4 & 1  # an inter frame, shown
    assert len(data) < 60 and tag >> 5 == len(data) - 4  # the first partition, then a one-byte token partition
    header = BoolDecoder(data[3:])
    assert header.literal(1) == segmentation and segmentation_enabled(data) == segmentation
    if segmentation:
        assert header.literal(2) == 0  # the map and the segment features stay as they were
    assert header.literal(1 + 6 + 3 + 1 + 2 + 7 + 5) == 0  # loop filter off; one token partition
    assert header.literal(1 + 1 + 2 + 2 + 2) == 0  # golden and altref untouched
    assert header.literal(2) == 0  # probabilities restored afterwards, last frame not refreshed


def test_repeated_frames_go_out_as_exact_copies(pack: AvatarPack) -> None:
    # an idle head, sent as the video track does (a repeated picture is the same frame object), decoded by
    # libvpx (aiortc's decoder, as Chromium) and by FFmpeg's own VP8 decoder
    source = AvatarSource(Renderer(pack), Motion(seed=6))
    encoder = TalkingHeadVp8Encoder()
    stream: list[tuple[bytes, bool]] = []
    frame, key_at = None, -1
    for i in range(75):
        draw = source.video_picture(i / VIDEO_FPS)
        if draw is not None:
            yuv = np.asarray(cv2.cvtColor(draw(), cv2.COLOR_BGR2YUV_I420), np.uint8)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        assert frame is not None
        frame.pts, frame.time_base = i * VIDEO_TICKS, fractions.Fraction(1, 90_000)
        key = key_at < 0 and i >= 50 and draw is None  # a keyframe request on a repeated picture
        key_at = i if key else key_at
        payloads, _ = encoder.encode(frame, force_keyframe=key)
        stream.append((b"".join(vp8_depayload(p) for p in payloads), draw is None))
    repeats = [data for data, repeated in stream if repeated and data[0] & 1]
    assert len(repeats) > 20 and all(len(data) < 60 for data in repeats)
    assert key_at > 0 and not stream[key_at][0][0] & 1  # is honoured
    for name in ("libvpx", "vp8"):
        with_repeats, alone = av.CodecContext.create(name, "r"), av.CodecContext.create(name, "r")
        shown = None
        for data, repeated in stream:
            (out,) = with_repeats.decode(av.Packet(data))
            picture = out.to_ndarray()
            if repeated and data[0] & 1:
                assert np.array_equal(picture, shown), name  # the very picture shown before
            else:  # and the repeats leave the decoder exactly where the encoder thinks it is
                (same,) = alone.decode(av.Packet(data))
                assert np.array_equal(picture, same.to_ndarray()), name
            shown = picture
