"""espeak-ng backend through libespeak-ng: audio and IPA phoneme timings in several languages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.speech.base import SILENCE, SpeechChunk, Voice
from liveavatar.speech.espeak import EspeakEngine, EspeakLibrary, espeak_library, segments_from_events
from liveavatar.speech.sentences import SentenceTTS


def _voice(identifier: str, language: str) -> Voice:
    return Voice(f"espeak-{language}", language, language, language, "male", "espeak", language, identifier)


GERMAN = _voice("gmw/de", "de")
FRENCH = _voice("roa/fr", "fr-FR")


@pytest.fixture(scope="module")
def tts() -> SentenceTTS:
    return SentenceTTS(EspeakEngine())


async def _collect(tts: SentenceTTS, text: str, voice: Voice, **kwargs: Any) -> list[SpeechChunk]:
    return [chunk async for chunk in tts.synthesize(text, voice, **kwargs)]


def _check_chunk(chunk: SpeechChunk) -> None:
    assert chunk.sample_rate == espeak_library().sample_rate == 22050
    assert chunk.audio.dtype == np.int16 and chunk.audio.ndim == 1
    assert chunk.duration > 0.3
    assert np.abs(chunk.audio.astype(np.int32)).max() > 1000
    assert chunk.phonemes[0].start == 0.0
    for before, after in zip(chunk.phonemes, chunk.phonemes[1:], strict=False):
        assert after.start == pytest.approx(before.end, abs=1e-9)
        assert not (before.phoneme == after.phoneme == SILENCE)
    assert abs(chunk.phonemes[-1].end - chunk.duration) <= 1 / chunk.sample_rate
    assert all(p.duration > 0 for p in chunk.phonemes)


def _spoken(chunk: SpeechChunk) -> str:
    return "".join(p.phoneme for p in chunk.phonemes if p.phoneme != SILENCE)


async def test_german_audio_with_ipa_timings(tts: SentenceTTS) -> None:
    chunks = await _collect(tts, "Guten Tag, wie geht es Ihnen? Mir geht es gut.", GERMAN)
    assert [c.text for c in chunks] == ["Guten Tag, wie geht es Ihnen?", "Mir geht es gut."]
    for chunk in chunks:
        _check_chunk(chunk)
    assert "ɡuːtən" in _spoken(chunks[0])  # IPA, not espeak's ASCII mnemonics
    assert "uː" in [p.phoneme for p in chunks[1].phonemes]


async def test_french_audio_with_ipa_timings(tts: SentenceTTS) -> None:
    [chunk] = await _collect(tts, "Bonjour, comment allez-vous aujourd'hui?", FRENCH)
    _check_chunk(chunk)
    phonemes = [p.phoneme for p in chunk.phonemes]
    assert "ʒ" in phonemes and "ʁ" in phonemes
    assert any("\u0303" in p for p in phonemes)  # a nasal vowel keeps its tilde


async def test_speed_changes_the_rate(tts: SentenceTTS) -> None:
    [slow] = await _collect(tts, "Das ist ein ganz normaler Satz.", GERMAN, speed=0.8)
    [fast] = await _collect(tts, "Das ist ein ganz normaler Satz.", GERMAN, speed=1.2)
    assert fast.duration < slow.duration * 0.85


async def test_pron_map_applies(tts: SentenceTTS) -> None:
    [plain] = await _collect(tts, "Ich mag XYZ.", GERMAN)
    [mapped] = await _collect(tts, "Ich mag XYZ.", GERMAN, pron_map={"xyz": "Apfel"})
    [direct] = await _collect(tts, "Ich mag Apfel.", GERMAN)
    assert mapped.text == "Ich mag XYZ."
    assert _spoken(mapped) == _spoken(direct) != _spoken(plain)


async def test_unknown_voice_and_foreign_engine_are_param_errors(tts: SentenceTTS) -> None:
    with pytest.raises(ParamError):
        await _collect(tts, "Hallo.", _voice("nowhere/xx", "xx"))
    piper_voice = Voice("piper-en-us-joe", "Joe", "en", "en-US", "male", "piper", "English")
    with pytest.raises(ParamError):
        await _collect(tts, "Hello.", piper_voice)


def test_missing_library_is_a_project_error() -> None:
    with pytest.raises(ProcessingError, match="espeak-ng library"):
        EspeakLibrary("libespeak-ng-does-not-exist.so.1")


def test_segments_from_events_cover_the_audio() -> None:
    events = [(12, "ɡ"), (33, "uː"), (182, "t"), (250, "ˈ"), (300, ""), (300, "a"), (400, ""), (450, "")]
    segments = segments_from_events(events, total=11025, sample_rate=22050)
    assert sum(n for _, n in segments) == 11025
    assert [p for p, _ in segments] == [SILENCE, "ɡ", "uː", "t", "a", SILENCE]  # the empty pause is gone
    assert segments[0] == (SILENCE, round(12 * 22.05))
    assert segments[3] == ("t", round(300 * 22.05) - round(182 * 22.05))  # the stress mark joined "t"
