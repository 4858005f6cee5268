"""The one resampler: streaming (mic -> 16 kHz), whole signals (speech -> 48 kHz), and the mic track's use of it.

scipy's `resample_poly` is the reference: the same Kaiser-windowed polyphase design, so the outputs agree
to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import resample_poly

from liveavatar.client.media import MicrophoneTrack
from liveavatar.errors import ParamError
from liveavatar.session.playback import to_playback_rate
from liveavatar.speech.resample import Resampler, resample

MIC_RATE = 48000


def sine(frequency: float, rate: int, seconds: float, amplitude: float) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(audio: npt.NDArray[np.int16], rate: int) -> float:
    window = audio.astype(np.float64) * np.hanning(len(audio))
    spectrum = np.abs(np.fft.rfft(window))
    peak = int(spectrum[1:-1].argmax()) + 1
    # Quadratic interpolation between the bins around the peak: sub-bin accuracy.
    a, b, c = np.log(spectrum[peak - 1 : peak + 2])
    return (peak + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(audio)


def rms(audio: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


@pytest.mark.parametrize("rate", [22050, 16000, 24000, 44100, 8000])
def test_a_resampled_sine_keeps_its_frequency_and_level(rate: int) -> None:
    tone = sine(440.0, rate, 1.0, 0.5)
    out = resample(tone, rate, MIC_RATE)
    assert out.dtype == np.int16
    assert len(out) == math.ceil(len(tone) * MIC_RATE / rate)
    middle = out[2400:-2400]  # away from the edges, where the filter meets the zeros outside the signal
    assert peak_frequency(middle, MIC_RATE) == pytest.approx(440.0, abs=0.5)
    assert rms(middle) == pytest.approx(0.5 * 32767 / math.sqrt(2), rel=0.005)
    divisor = math.gcd(rate, MIC_RATE)
    reference = resample_poly(tone.astype(np.float64), MIC_RATE // divisor, rate // divisor)
    assert np.abs(out - reference).max() <= 1.0  # rounding to int16, nothing more
    assert np.array_equal(to_playback_rate(tone, rate), out)


def test_resample_passes_its_own_rate_and_empty_audio_through() -> None:
    tone = sine(440.0, MIC_RATE, 0.1, 0.5)
    assert np.array_equal(resample(tone, MIC_RATE, MIC_RATE), tone)
    assert len(resample(np.zeros(0, dtype=np.int16), 22050, MIC_RATE)) == 0


def test_overshoot_is_clipped_not_wrapped() -> None:
    square = np.where(sine(300.0, 22050, 0.2, 1.0) >= 0, 32767, -32768).astype(np.int16)  # rings past full scale
    out = resample(square, 22050, MIC_RATE)
    reference = resample_poly(square.astype(np.float64), 320, 147)
    assert reference.max() > 32767 and reference.min() < -32768
    assert np.abs(out - np.clip(reference, -32768, 32767)).max() <= 1.0


async def test_the_mic_track_resamples_pushed_frames_as_one_signal() -> None:
    """Frames pushed one by one leave the track exactly as the whole signal resampled at once (no seams)."""
    tone = sine(440.0, 16000, 0.3, 0.5)
    mic = MicrophoneTrack()
    for start in range(0, len(tone), 320):  # 20 ms frames at 16 kHz, as a live source pushes them
        mic.push(tone[start : start + 320], 16000)
    sent = []
    while not mic.drained.is_set():
        frame = await mic.recv()
        sent.append(frame.to_ndarray().reshape(-1))
    mic.stop()
    expected = resample(tone, 16000, MIC_RATE)
    out = np.concatenate(sent)
    assert np.array_equal(out[: len(expected)], expected)
    assert not out[len(expected) :].any()


def test_resampler_matches_a_polyphase_reference_whatever_the_framing() -> None:
    rng = np.random.default_rng(1)
    for rate in (48000, 44100, 22050, 8000):
        t = np.arange(2 * rate) / rate
        tone = (9000 * np.sin(2 * np.pi * 440 * t) + 3000 * np.sin(2 * np.pi * 2500 * t)).astype(np.int16)
        whole = Resampler()
        once = np.concatenate((whole.process(tone, rate), whole.flush()))
        framed = Resampler()
        parts, start = [], 0
        while start < len(tone):
            size = int(rng.integers(1, 1500))
            parts.append(framed.process(tone[start : start + size], rate))
            start += size
        pieces = np.concatenate([*parts, framed.flush()])
        reference = resample_poly(tone / 32768, 16000, rate)
        assert once.dtype == np.float32 and len(once) == len(reference) == 32000
        assert np.array_equal(once, pieces), "state carries across frames exactly"
        assert np.abs(once - reference).max() < 1e-4
        assert whole.emitted == framed.emitted == 32000


def test_resampler_mixes_stereo_and_removes_what_16k_cannot_hold() -> None:
    t = np.arange(MIC_RATE) / MIC_RATE
    left = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    right = (8000 * np.sin(2 * np.pi * 12000 * t)).astype(np.int16)  # above 8 kHz: must not alias into speech
    packed = np.stack((left, right), axis=1).reshape(1, -1)
    resampler = Resampler()
    out = np.concatenate([resampler.process(packed[:, i : i + 1920], MIC_RATE, 2) for i in range(0, 96000, 1920)])
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    freqs = np.fft.rfftfreq(len(out) - 2000, 1 / 16000)
    assert abs(freqs[spectrum.argmax()] - 1000) < 5
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(0.5 * 8000 / 32768 / np.sqrt(2), rel=0.02)
    alias = spectrum[np.abs(freqs - 4000) < 50].max()  # 12 kHz folds to 4 kHz at 16 kHz
    assert alias < spectrum.max() / 300
    planar = Resampler().process(np.stack((left, right))[:, :1920], MIC_RATE, 2)
    assert np.allclose(planar, Resampler().process(packed[:, :3840], MIC_RATE, 2))
    with pytest.raises(ParamError):
        Resampler().process(np.zeros(3, dtype=np.int16), MIC_RATE, 2)
