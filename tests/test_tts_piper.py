"""Piper backend with the packaged joe voice: audio, timings, speed, pron_map, streaming, intelligibility."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import wave
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from conftest import same_words
from liveavatar.errors import ParamError
from liveavatar.media import AUDIO_RATE
from liveavatar.speech import piper
from liveavatar.speech.base import SILENCE, WORD_GAP, Abandon, SpeechChunk, Voice
from liveavatar.speech.piper import VOLUME, PiperEngine, PiperModel, StoppableSession, merge_alignments
from liveavatar.speech.resample import resample
from liveavatar.speech.sentences import SentenceTTS
from liveavatar.speech.voices import PIPER_JOE


@pytest.fixture(scope="module")
def tts() -> SentenceTTS:
    backend = SentenceTTS(PiperEngine())
    backend.load()
    return backend


def _logging(tts: SentenceTTS, log: list[str]) -> SentenceTTS:
    """A second backend on the same model, logging when each sentence's synthesis starts and ends."""
    assert isinstance(tts.engine, PiperEngine)
    return SentenceTTS(PiperEngine(_LoggingModel(tts.engine.model(), log)))


async def _collect(tts: SentenceTTS, text: str, **kwargs: Any) -> list[SpeechChunk]:
    return [chunk async for chunk in tts.synthesize(text, PIPER_JOE, **kwargs)]


def _check_timings(chunk: SpeechChunk) -> None:
    assert chunk.phonemes, "Piper gives phoneme timings"
    assert chunk.phonemes[0].start == 0.0
    for before, after in zip(chunk.phonemes, chunk.phonemes[1:], strict=False):
        assert after.start == pytest.approx(before.end, abs=1e-9)
    assert abs(chunk.phonemes[-1].end - chunk.duration) <= 1 / chunk.sample_rate
    assert all(p.duration > 0 for p in chunk.phonemes)
    marks = set("ˈˌː^$")
    assert not [p.phoneme for p in chunk.phonemes if set(p.phoneme) & marks - {"ː"}], "zero-sound symbols were merged"
    assert not [p.phoneme for p in chunk.phonemes if p.phoneme.startswith("ː")], "length marks join their vowel"
    quiet = (SILENCE, WORD_GAP)
    for before, after in zip(chunk.phonemes, chunk.phonemes[1:], strict=False):
        assert not (before.phoneme in quiet and after.phoneme in quiet), "pauses and word gaps are merged"


def _spoken(chunk: SpeechChunk) -> list[str]:
    return [p.phoneme for p in chunk.phonemes if p.phoneme not in (SILENCE, WORD_GAP)]


async def test_synthesizes_a_sentence_with_timings_covering_the_audio(tts: SentenceTTS) -> None:
    [chunk] = await _collect(tts, "The quick brown fox jumps over the lazy dog.")
    assert chunk.text == "The quick brown fox jumps over the lazy dog."
    assert chunk.sample_rate == 22050
    assert chunk.audio.dtype == np.int16 and chunk.audio.ndim == 1
    assert 1.0 < chunk.duration < 6.0
    assert np.abs(chunk.audio.astype(np.int32)).max() > 3000
    _check_timings(chunk)
    assert {"k", "f", "d"} <= set(_spoken(chunk))
    assert any("ː" in p for p in _spoken(chunk)) or any(len(p) == 1 for p in _spoken(chunk))


async def test_speech_leaves_headroom_so_that_48_khz_does_not_clip(tts: SentenceTTS) -> None:
    text = "Wow! That is absolutely fantastic news. Watch out! The floor is wet near the entrance."
    for chunk in await _collect(tts, text):
        peak = int(np.abs(chunk.audio.astype(np.int32)).max())
        assert 0.6 * 32767 < peak <= VOLUME * 32767 + 1  # Piper scales each sentence to this peak
        played = resample(chunk.audio, chunk.sample_rate, AUDIO_RATE)
        assert not np.any((played == 32767) | (played == -32768)), "intersample peaks clipped"


async def test_a_sentence_ends_with_at_most_the_trailing_silence_kept(
    tts: SentenceTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(piper, "TRAILING_SILENCE_MS", 20)  # below any pause Piper ends a sentence with
    for chunk in await _collect(tts, "Good evening. Is this the right way to the station? Yes!"):
        assert chunk.phonemes[-1].phoneme == SILENCE
        assert chunk.phonemes[-1].duration == pytest.approx(0.020, abs=1 / chunk.sample_rate)
        _check_timings(chunk)  # the audio was cut with its timings


async def test_faster_speed_gives_shorter_audio(tts: SentenceTTS) -> None:
    text = "Speaking faster makes the sentence shorter than speaking slowly."
    [slow] = await _collect(tts, text, speed=0.8)
    [fast] = await _collect(tts, text, speed=1.2)
    assert fast.duration < slow.duration * 0.85
    _check_timings(slow)
    _check_timings(fast)


async def test_speed_out_of_range_and_foreign_voice_are_param_errors(tts: SentenceTTS) -> None:
    with pytest.raises(ParamError):
        await _collect(tts, "Hi.", speed=2.0)
    espeak_voice = Voice("espeak-de", "German", "de", "de", "male", "espeak", "German", "gmw/de")
    with pytest.raises(ParamError):
        [c async for c in tts.synthesize("Hallo.", espeak_voice)]


async def test_pron_map_changes_the_spoken_phonemes(tts: SentenceTTS) -> None:
    [plain] = await _collect(tts, "We use SQL daily.")
    [mapped] = await _collect(tts, "We use SQL daily.", pron_map={"sql": "sequel"})
    [direct] = await _collect(tts, "We use sequel daily.")
    assert mapped.text == "We use SQL daily."  # the chunk keeps the text the user sees
    assert _spoken(mapped) == _spoken(direct)
    assert _spoken(mapped) != _spoken(plain)


class _LoggingModel:
    """Wraps the real model and logs when each sentence's synthesis starts and ends."""

    def __init__(self, model: PiperModel, log: list[str]) -> None:
        self._model = model
        self._log = log
        self._lock = threading.Lock()

    @property
    def config(self) -> Any:
        return self._model.config

    def synthesize(self, text: str, syn_config: Any = None, include_alignments: bool = False) -> Iterable[Any]:
        with self._lock:
            self._log.append(f"start {text}")
        pieces = list(self._model.synthesize(text, syn_config=syn_config, include_alignments=include_alignments))
        with self._lock:
            self._log.append(f"end {text}")
        return pieces


async def test_chunks_stream_sentence_by_sentence(tts: SentenceTTS) -> None:
    log: list[str] = []
    streaming = _logging(tts, log)
    sentences = ["First sentence here.", "Second one follows.", "Third comes next.", "And the fourth."]
    texts: list[str] = []
    async for chunk in streaming.synthesize(" ".join(sentences), PIPER_JOE):
        log.append(f"got {chunk.text}")
        texts.append(chunk.text)
        _check_timings(chunk)
    assert texts == sentences
    # The first chunk is handed out before the last sentence is synthesised (order, not wall-clock).
    assert log.index("got First sentence here.") < log.index("end And the fourth.")
    # At most one sentence is synthesised ahead of the consumer.
    assert log.index("got First sentence here.") < log.index("start Third comes next.")


async def test_closing_the_stream_early_stops_synthesis(tts: SentenceTTS) -> None:
    log: list[str] = []
    streaming = _logging(tts, log)
    stream = streaming.synthesize("One. Two. Three. Four. Five.", PIPER_JOE)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    # Syntheses queue on one lock: a sentence queued eagerly behind "Two." would have started by now.
    await asyncio.to_thread(streaming.synthesize_sentence, "Six.", PIPER_JOE)
    assert first.text == "One."
    assert "end Six." in log
    assert "start Three." not in log


async def test_an_abandoned_sentence_stops_mid_synthesis(tts: SentenceTTS) -> None:
    from piper import PiperVoice

    model = tts.engine.model() if isinstance(tts.engine, PiperEngine) else None
    assert isinstance(model, PiperVoice) and isinstance(model.session, StoppableSession)
    started = threading.Event()

    class Announcing:  # the real session, telling when a run begins
        def run(self, *args: Any) -> Any:
            started.set()
            return model.session.session.run(*args)

    engine = PiperEngine(PiperVoice(config=model.config, session=StoppableSession(Announcing())))
    long = " ".join(["this sentence goes on and on with many words"] * 9) + "."  # ~30 s of speech
    abandon = Abandon()
    speaking = asyncio.create_task(asyncio.to_thread(engine.speak, long, PIPER_JOE, 1.0, abandon))
    await asyncio.to_thread(started.wait, 10)
    abandon.set()
    with pytest.raises(Exception, match="terminate"):  # onnxruntime stopped between operators
        await speaking
    [chunk] = await _collect(tts, "Still speaking.")  # the model serves on
    assert chunk.text == "Still speaking."


async def test_concurrent_sessions_share_the_model(tts: SentenceTTS) -> None:
    results = await asyncio.gather(_collect(tts, "One voice for all. Shared."), _collect(tts, "Two at once."))
    assert [len(chunks) for chunks in results] == [2, 1]


def test_merge_alignments_keeps_samples_and_drops_zero_sound_symbols() -> None:
    raw = [("^", 100), ("t", 50), ("ˈ", 41), ("ɛ", 60), ("ː", 30), ("s", 20), (" ", 10), ("ˈ", 8), ("a", 5)]
    raw += [(",", 7), (" ", 9), ("n", 4), ("̩", 3), (".", 11), ("$", 13)]
    merged = merge_alignments(raw)
    assert sum(n for _, n in merged) == sum(n for _, n in raw)
    assert merged == [
        (SILENCE, 100),
        ("t", 50 + 20),  # half the stress mark's frames go to the onset before it
        ("ɛː", 21 + 60 + 30),  # the other half to the stressed vowel; the length mark joins it
        ("s", 20),
        (WORD_GAP, 10),
        ("a", 8 + 5),  # no sound before it in its word: the stress mark goes to the vowel only
        (SILENCE, 7 + 9),  # a word gap after punctuation is part of its pause
        ("n̩", 4 + 3),
        (SILENCE, 11 + 13),
    ]


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


async def test_whisper_understands_piper(tts: SentenceTTS, whisper: Any) -> None:
    from faster_whisper.audio import decode_audio

    text = "The weather is nice today, and we are going to the park."
    [chunk] = await _collect(tts, text)
    wav = io.BytesIO()
    with wave.open(wav, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(chunk.sample_rate)
        out.writeframes(chunk.audio.tobytes())
    wav.seek(0)
    audio = decode_audio(wav, sampling_rate=16000)
    segments, _ = whisper.transcribe(audio, language="en", beam_size=1)
    heard = " ".join(segment.text for segment in segments)
    assert same_words(_words(heard), _words(text)), heard
