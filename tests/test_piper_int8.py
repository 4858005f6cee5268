"""The int8 Piper voice: built from the packaged model into a cache, speaks like the float one, falls back to it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import same_words
from liveavatar.speech import piper_int8
from liveavatar.speech.base import SpeechChunk
from liveavatar.speech.piper import PiperEngine, lean_session, load_piper_model, packaged_joe_paths
from liveavatar.speech.piper_int8 import FLOW_AND_EARLY_DECODER, cached_int8_path, int8_model
from liveavatar.speech.resample import resample
from liveavatar.speech.voices import PIPER_JOE

TEXT = "Tickets are cheaper online, and children under twelve go in free."


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache with the int8 model built into it (the build the server does on first load)."""
    model_path, config_path = packaged_joe_paths()
    cache = tmp_path_factory.mktemp("piper-int8")
    int8_model(model_path, config_path, cache)
    return cache


def _quiet_run(session: Any, text: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(audio, frames per phoneme id) of one sentence with Piper's noise off: deterministic, comparable."""
    from piper.config import SynthesisConfig

    model_path, config_path = packaged_joe_paths()
    voice: Any = load_piper_model(model_path, config_path)
    [phonemes] = voice.phonemize(text)
    ids = voice.phonemes_to_ids(phonemes)
    previous = voice.session
    voice.session = session
    try:
        quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        audio, samples = voice.phoneme_ids_to_audio(ids, quiet, include_alignments=True)
    finally:
        voice.session = previous
    return np.asarray(audio), np.asarray(samples)


def _log_mel(audio: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    n_fft, hop = 1024, 256
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bands = np.array_split(power, 64, axis=1)  # coarse linear bands are enough to see hiss or a lost band
    return 10 * np.log10(np.stack([band.sum(axis=1) for band in bands], axis=1) + 1e-10)


def test_the_int8_model_is_cached_by_source_and_recipe_and_not_rebuilt(int8_dir: Path) -> None:
    model_path, config_path = packaged_joe_paths()
    [built] = [path for path in int8_dir.iterdir() if path.suffix == ".onnx"]
    assert built == cached_int8_path(model_path, int8_dir)
    assert FLOW_AND_EARLY_DECODER.name in built.name and FLOW_AND_EARLY_DECODER.key() in built.name
    assert built.stat().st_size < model_path.stat().st_size  # int8 weights
    stamp = built.stat().st_mtime_ns
    assert int8_model(model_path, config_path, int8_dir) == built
    assert built.stat().st_mtime_ns == stamp
    assert not [path for path in int8_dir.iterdir() if path.name.endswith(".partial")]


def test_the_int8_model_sounds_like_the_float_model_with_the_same_timings(int8_dir: Path) -> None:
    model_path, _ = packaged_joe_paths()
    float_audio, float_samples = _quiet_run(lean_session(model_path, as_2d=False), TEXT)
    int8_audio, int8_samples = _quiet_run(lean_session(cached_int8_path(model_path, int8_dir)), TEXT)
    assert np.array_equal(int8_samples, float_samples), "the duration predictor stays float: same lip-sync"
    assert len(int8_audio) == len(float_audio)
    reference, got = _log_mel(float_audio), _log_mel(int8_audio)
    floor = reference.max() - 80.0
    distance = np.abs(np.maximum(reference, floor) - np.maximum(got, floor))
    assert distance.mean() < 2.5, "log-spectra within Piper's own noise variation (~2 dB)"
    quiet = reference.max(axis=1) < reference.max() - 50.0  # pauses: where hiss would show
    assert quiet.any()
    pause_db = [10 * np.log10((10 ** (bands[quiet] / 10)).sum()) for bands in (reference, got)]
    assert pause_db[1] - pause_db[0] < 6.0, "no hiss in the pauses (measured: +3 dB over float's floor at -86 dB)"
    assert np.abs(int8_audio).max() < 1.0 and abs(float(int8_audio.mean())) < 0.01


def test_the_2d_convolutions_give_the_float_samples() -> None:
    model_path, _ = packaged_joe_paths()
    one_d, one_d_samples = _quiet_run(lean_session(model_path, as_2d=False), TEXT)
    two_d, two_d_samples = _quiet_run(lean_session(model_path, as_2d=True), TEXT)
    assert np.array_equal(one_d_samples, two_d_samples)
    assert np.abs(one_d - two_d).max() < 1e-3


def test_the_int8_engine_speaks_with_timings_covering_the_audio(int8_dir: Path, whisper: Any) -> None:
    engine = PiperEngine(int8_dir=int8_dir)
    said = "The weather is nice today, and we are going to the park."
    chunk = engine.speak(said, PIPER_JOE, 1.0)
    assert isinstance(chunk, SpeechChunk)
    assert chunk.phonemes[0].start == 0.0
    assert abs(chunk.phonemes[-1].end - chunk.duration) <= 1 / chunk.sample_rate
    assert all(p.duration > 0 for p in chunk.phonemes)
    audio = resample(chunk.audio, chunk.sample_rate, 16000).astype(np.float32) / 32768.0
    segments, _ = whisper.transcribe(audio, language="en", beam_size=1)
    heard = " ".join(segment.text for segment in segments)
    assert same_words(_words(heard), _words(said)), heard


def test_a_cache_that_cannot_be_written_falls_back_to_the_float_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    engine = PiperEngine(int8_dir=blocked / "piper")
    with caplog.at_level(logging.WARNING, logger="liveavatar.speech.piper"):
        chunk = engine.speak("Hello there.", PIPER_JOE, 1.0)  # at once, with the float model
        assert chunk is not None and chunk.phonemes
        _wait_for(lambda: any("float model" in record.getMessage() for record in caplog.records))
    assert engine.speak("Still here.", PIPER_JOE, 1.0) is not None


def test_the_voice_speaks_at_once_and_switches_to_int8_once_built(
    int8_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, release = threading.Event(), threading.Event()

    def slow_build(model_path: Path, config_path: Path, cache_dir: Path) -> Path:
        release.wait(30)  # the ~30 s build, held until the float model has spoken
        built.set()
        return cached_int8_path(model_path, int8_dir)

    monkeypatch.setattr(piper_int8, "int8_model", slow_build)
    engine = PiperEngine(int8_dir=tmp_path / "empty-cache")
    first = engine.speak(TEXT, PIPER_JOE, 1.0)  # no wait for the build
    voice: Any = engine.model()
    float_session = voice.session.session
    assert first is not None and not built.is_set()
    release.set()
    _wait_for(lambda: voice.session.session is not float_session)
    again = engine.speak(TEXT, PIPER_JOE, 1.0)
    assert again is not None and again.phonemes


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split()
