"""The outbound audio path: the track encodes Opus itself, aiortc only packs, and the sound survives."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES, UnpacedClock
from liveavatar.transport.opus import OpusPacker
from liveavatar.transport.tracks import AvatarAudioTrack
from liveavatar.transport.vp8 import use_encoder

TONE_HZ = 440.0
CUT = 25
"""The frame from which the source is silent (an interrupt)."""
LOOKAHEAD = 312
"""Opus's encoder delay in samples: the decoder gives the sound of sample p at p + LOOKAHEAD."""


class ToneThenSilence:
    """A 440 Hz tone for CUT frames, then digital silence, as a session's audio after an interrupt."""

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        index = round(t / AUDIO_PTIME)
        if index >= CUT:
            return np.zeros(AUDIO_SAMPLES, dtype=np.int16)
        n = np.arange(index * AUDIO_SAMPLES, (index + 1) * AUDIO_SAMPLES)
        return (8000 * np.sin(2 * np.pi * TONE_HZ * n / AUDIO_RATE)).astype(np.int16)


async def test_the_track_hands_out_one_opus_packet_per_frame_that_decoders_play() -> None:
    track = AvatarAudioTrack(ToneThenSilence(), UnpacedClock())
    packer, decoder = OpusPacker(), OpusDecoder()  # aiortc's decoder: stereo out, as a client's
    decoded = []
    for index in range(CUT + 10):
        packet = await track.recv()
        payloads, timestamp = packer.pack(packet)
        assert timestamp == index * AUDIO_SAMPLES  # RTP timestamps as for raw frames: origin + pts
        assert len(payloads) == 1 and 0 < len(payloads[0]) < 200  # ~32 kbps: ~80 bytes per 20 ms
        (frame,) = decoder.decode(JitterFrame(payloads[0], timestamp))
        stereo = frame.to_ndarray().reshape(-1, 2)
        assert len(stereo) == AUDIO_SAMPLES and np.array_equal(stereo[:, 0], stereo[:, 1])  # mono, both ears
        decoded.append(stereo[:, 0].astype(np.float64))
    track.stop()
    sound = np.concatenate(decoded)
    tone = sound[5 * AUDIO_SAMPLES : CUT * AUDIO_SAMPLES]
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spectrum) * AUDIO_RATE / len(tone) - TONE_HZ) < 5
    assert 0.7 * 8000 < np.sqrt(2 * np.mean(tone**2)) < 1.3 * 8000
    # the cut: the tone's last sample leaves the decoder LOOKAHEAD later; from the next frame on what is left
    # is Opus's pitch filter ringing out below -34 dB (a pure tone's worst case; speech leaves ~0)
    cut = CUT * AUDIO_SAMPLES + LOOKAHEAD
    assert np.abs(sound[cut - AUDIO_SAMPLES // 2 : cut - 100]).max() > 1000
    assert np.abs(sound[(CUT + 1) * AUDIO_SAMPLES :]).max() < 8000 / 50
    assert np.abs(sound[(CUT + 2) * AUDIO_SAMPLES :]).max() < 8000 / 200


async def test_aiortc_packs_the_tracks_packets_the_same_way_without_our_packer() -> None:
    """If a newer aiortc lost the encoder slot, its own OpusEncoder.pack would send the same RTP."""
    track = AvatarAudioTrack(ToneThenSilence(), UnpacedClock())
    ours, aiortcs = OpusPacker(), OpusEncoder()
    for _ in range(3):
        packet = await track.recv()
        assert ours.pack(packet) == aiortcs.pack(packet)
    track.stop()


async def test_the_audio_sender_takes_the_packer() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTrack(AvatarAudioTrack(ToneThenSilence(), UnpacedClock()))
        assert use_encoder(sender, OpusPacker())  # aiortc still has the slot it fills
    finally:
        await pc.close()


async def test_the_packer_knows_the_pts_of_the_last_packets_sent_after_a_skip() -> None:
    track, packer = AvatarAudioTrack(ToneThenSilence(), UnpacedClock()), OpusPacker()
    for _ in range(2):
        packer.pack(await track.recv())
    track.pacer.index += 50  # a track starved of CPU skips to the frame due now
    packer.pack(await track.recv())
    track.stop()
    assert packer.packed == 3
    assert (packer.pts_of(3), packer.pts_of(2), packer.pts_of(1)) == (52 * AUDIO_SAMPLES, AUDIO_SAMPLES, None)


class Bursts:
    """Tone and digital silence by turns, 25 frames each: an idle session that speaks now and then."""

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        index = round(t / AUDIO_PTIME)
        if index // 25 % 2 == 0:
            return np.zeros(AUDIO_SAMPLES, dtype=np.int16)
        n = np.arange(index * AUDIO_SAMPLES, (index + 1) * AUDIO_SAMPLES)
        return (8000 * np.sin(2 * np.pi * TONE_HZ * n / AUDIO_RATE)).astype(np.int16)


async def test_settled_silence_goes_out_as_the_same_packet_and_speech_after_it_plays() -> None:
    track = AvatarAudioTrack(Bursts(), UnpacedClock())
    packer, decoder = OpusPacker(), OpusDecoder()
    packets, decoded = [], []
    for index in range(100):
        payloads, timestamp = packer.pack(await track.recv())
        assert timestamp == index * AUDIO_SAMPLES
        packets.append(payloads[0])
        (frame,) = decoder.decode(JitterFrame(payloads[0], timestamp))
        decoded.append(frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64))
    track.stop()
    for quiet in (range(17, 25), range(67, 75)):  # once libopus has settled (~13 frames after a tone)
        assert len({packets[i] for i in quiet}) == 1 and len(packets[quiet[0]]) < 10
    sound = np.concatenate(decoded)
    for start in (25, 75):  # each burst plays the tone at its level, the one after repeated silence too
        tone = sound[(start + 3) * AUDIO_SAMPLES : (start + 25) * AUDIO_SAMPLES]
        spectrum = np.abs(np.fft.rfft(tone))
        assert abs(np.argmax(spectrum) * AUDIO_RATE / len(tone) - TONE_HZ) < 5
        assert 0.7 * 8000 < np.sqrt(2 * np.mean(tone**2)) < 1.3 * 8000
    assert np.abs(sound[10 * AUDIO_SAMPLES : 25 * AUDIO_SAMPLES]).max() < 8000 / 200  # silence decodes as such
    assert np.abs(sound[62 * AUDIO_SAMPLES : 75 * AUDIO_SAMPLES]).max() < 8000 / 200
