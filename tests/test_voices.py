"""Voice discovery, the voice registry, and the deterministic FakeTTS."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liveavatar.config import Settings
from liveavatar.errors import NotFound, ParamError
from liveavatar.speech.base import SILENCE, TTS, WORD_GAP, SpeechChunk
from liveavatar.speech.espeak import EspeakEngine, EspeakVoiceInfo
from liveavatar.speech.fake import FAKE_VOICE, FakeTTS
from liveavatar.speech.piper import PiperEngine
from liveavatar.speech.sentences import SentenceTTS
from liveavatar.speech.voices import (
    PIPER_JOE,
    TTS_FACTORIES,
    VoiceRegistry,
    default_registry,
    discover_voices,
    espeak_voices,
    normalize_language,
    tts_factories,
)


@pytest.fixture(scope="module")
def registry() -> VoiceRegistry:
    return default_registry()


def test_discover_lists_joe_and_many_espeak_languages() -> None:
    voices = discover_voices()
    assert voices[0] == PIPER_JOE
    espeak = [v for v in voices if v.engine == "espeak"]
    assert len(espeak) > 100
    assert len({v.voice_id for v in voices}) == len(voices)
    by_id = {v.voice_id: v for v in voices}
    german = by_id["espeak-de"]
    assert (german.language, german.language_name, german.engine_voice) == ("de", "German", "gmw/de")
    assert german.gender in ("male", "female", "neutral")
    assert by_id["espeak-pt-br"].language == "pt-BR"
    assert "zh" in by_id["espeak-cmn"].aliases


@pytest.mark.parametrize(
    ("code", "expected"),
    [("pt-br", "pt-BR"), ("EN_us", "en-US"), ("cmn-latn-pinyin", "cmn-Latn-pinyin"), ("es-419", "es-419"),
     ("en-gb-x-rp", "en-GB-x-rp"), ("de", "de")],
)  # fmt: skip
def test_normalize_language(code: str, expected: str) -> None:
    assert normalize_language(code) == expected


def test_shared_language_codes_go_to_the_best_voice_only() -> None:
    infos = [
        EspeakVoiceInfo("French (Belgium)", "roa/fr-BE", 1, ((5, "fr-be"), (8, "fr"))),
        EspeakVoiceInfo("French (France)", "roa/fr", 2, ((5, "fr-fr"), (5, "fr"))),
        EspeakVoiceInfo("Odd", "x/odd", 0, ((5, "qq"),)),
    ]
    belgian, french, odd = espeak_voices(infos)
    assert (belgian.voice_id, belgian.language, belgian.aliases) == ("espeak-fr-be", "fr-BE", ())
    assert (french.voice_id, french.language, french.aliases, french.gender) == (
        "espeak-fr",
        "fr-FR",
        ("fr",),
        "female",
    )
    assert odd.gender == "neutral"


def test_registry_lists_filters_and_gets(registry: VoiceRegistry) -> None:
    assert registry.get("piper-en-us-joe") == PIPER_JOE
    assert registry.get("no-such-voice") is None
    assert [v.voice_id for v in registry.list(name="JOE")] == ["piper-en-us-joe"]
    assert {v.language for v in registry.list(name="portuguese")} == {"pt", "pt-BR"}
    assert registry.list(gender="female") == [v for v in registry.list() if v.gender == "female"]
    assert PIPER_JOE in registry.list(gender="male")


def test_registry_languages_one_entry_each_sorted(registry: VoiceRegistry) -> None:
    languages = registry.languages()
    codes = [code for code, _ in languages]
    assert codes == sorted(set(codes))
    names = dict(languages)
    assert names["en"] == "English"
    assert names["de"] == "German"
    assert names["pt-BR"] == "Portuguese (Brazil)"
    assert len(languages) > 100


@pytest.mark.parametrize(
    ("language", "voice_id"),
    [
        (None, "piper-en-us-joe"),
        ("en", "piper-en-us-joe"),
        ("en-US", "piper-en-us-joe"),
        ("EN-au", "piper-en-us-joe"),
        ("en-GB", "espeak-en"),
        ("de", "espeak-de"),
        ("de-AT", "espeak-de"),
        ("fr", "espeak-fr"),
        ("pt-BR", "espeak-pt-br"),
        ("pt", "espeak-pt"),
        ("zh", "espeak-cmn"),
        ("zh-CN", "espeak-cmn"),
    ],
)
def test_default_voice(registry: VoiceRegistry, language: str | None, voice_id: str) -> None:
    assert registry.default_voice(language).voice_id == voice_id


def test_default_voice_for_an_unknown_language_is_a_param_error(registry: VoiceRegistry) -> None:
    with pytest.raises(ParamError, match="xx-YY"):
        registry.default_voice("xx-YY")


def test_tts_for_creates_each_backend_once() -> None:
    made: list[str] = []

    def counting(engine: str, factory: Callable[[], TTS]) -> Callable[[], TTS]:
        def make() -> TTS:
            made.append(engine)
            return factory()

        return make

    registry = VoiceRegistry(discover_voices(), {name: counting(name, make) for name, make in TTS_FACTORIES.items()})
    joe = registry.tts_for(PIPER_JOE)
    assert isinstance(joe, SentenceTTS) and isinstance(joe.engine, PiperEngine)
    german = registry.default_voice("de")
    espeak = registry.tts_for(german)
    assert isinstance(espeak, SentenceTTS) and isinstance(espeak.engine, EspeakEngine)
    assert registry.tts_for(registry.default_voice("fr")) is registry.tts_for(german)
    assert registry.tts_for(PIPER_JOE) is joe
    assert made == ["piper", "espeak"]
    with pytest.raises(NotFound):
        registry.tts_for(FAKE_VOICE)


async def test_fake_tts_is_deterministic_through_the_registry() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    registry = VoiceRegistry([FAKE_VOICE], {"fake": lambda: FakeTTS(delay_s=0.25, sleep=sleep)})
    tts = registry.tts_for(FAKE_VOICE)
    chunks: list[SpeechChunk] = [c async for c in tts.synthesize("Hi there. Go!", FAKE_VOICE, speed=1.0)]
    again = [c async for c in tts.synthesize("Hi there. Go!", FAKE_VOICE)]
    assert slept == [0.25] * 4
    assert [c.text for c in chunks] == ["Hi there.", "Go!"]
    first = chunks[0]
    assert [p.phoneme for p in first.phonemes] == ["h", "i", WORD_GAP, "t", "h", "e", "r", "e", SILENCE]
    assert first.phonemes[1].start == pytest.approx(round(22050 * 0.08) / 22050)
    assert first.phonemes[-1].end == pytest.approx(first.duration)
    assert np.array_equal(first.audio, again[0].audio)
    assert np.abs(first.audio[: round(22050 * 0.08)].astype(np.int32)).max() > 1000


async def test_fake_tts_speed_pron_map_and_requests() -> None:
    fake = FakeTTS()
    [slow] = [c async for c in fake.synthesize("abc", FAKE_VOICE, speed=0.8)]
    [fast] = [c async for c in fake.synthesize("abc", FAKE_VOICE, speed=1.2, pron_map={"abc": "xy"})]
    assert slow.duration == pytest.approx(3 * 0.08 / 0.8, abs=1e-4)
    assert [p.phoneme for p in fast.phonemes] == ["x", "y"]
    assert fast.text == "abc"
    assert fast.duration == pytest.approx(2 * 0.08 / 1.2, abs=1e-4)
    assert [(r.text, r.speed, dict(r.pron_map)) for r in fake.requests] == [
        ("abc", 0.8, {}),
        ("abc", 1.2, {"abc": "xy"}),
    ]
    with pytest.raises(ParamError):
        [c async for c in fake.synthesize("abc", FAKE_VOICE, speed=3.0)]


def test_female_english_voices_are_espeak_variants_that_speak_higher() -> None:
    from liveavatar.speech.voices import ESPEAK_FEMALE_VARIANT

    voices = {voice.voice_id: voice for voice in discover_voices()}
    for base in ("espeak-en-us", "espeak-en"):
        female = voices[f"{base}-female"]
        assert female.gender == "female" and female.engine == "espeak" and female.aliases == ()
        assert female.language == voices[base].language
        assert female.engine_voice == f"{voices[base].engine_voice}+{ESPEAK_FEMALE_VARIANT}"
    # English still defaults to the packaged Piper voice, British English to espeak-ng's own voice.
    registry = VoiceRegistry(voices.values())
    assert registry.default_voice("en").voice_id == PIPER_JOE.voice_id
    assert registry.default_voice("en-GB").voice_id == "espeak-en"

    def pitch(voice_id: str) -> float:
        chunk = EspeakEngine().speak("Hello, I will answer your questions today.", voices[voice_id], 1.0)
        assert chunk is not None
        x = chunk.audio.astype(np.float64)
        rate = chunk.sample_rate
        lo, hi = rate // 400, rate // 70
        found = []
        for start in range(0, len(x) - 2048, 1024):
            frame = x[start : start + 2048]
            if np.abs(frame).mean() < 300:
                continue
            ac = np.correlate(frame, frame, "full")[2047:]
            found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
        return float(np.median(found))

    assert pitch("espeak-en-us-female") > 1.6 * pitch("espeak-en-us")


def test_avatars_get_a_voice_of_their_gender() -> None:
    from liveavatar.avatars.voice import matching_voice_id

    registry = VoiceRegistry(discover_voices())
    female = registry.get(matching_voice_id(registry, "female"))
    assert female is not None and female.gender == "female" and female.language.startswith("en")
    assert female.locale == PIPER_JOE.locale  # the same accent as the default English voice
    assert matching_voice_id(registry, "male") == PIPER_JOE.voice_id
    assert matching_voice_id(registry, "") == PIPER_JOE.voice_id
    assert matching_voice_id(VoiceRegistry([PIPER_JOE]), "female") == PIPER_JOE.voice_id  # none of hers: default
    assert matching_voice_id(registry, "female", "xx") == ""


def test_a_session_speaks_with_its_avatars_voice_unless_told_otherwise() -> None:
    from liveavatar.session.conversation import voice_for
    from liveavatar.session.settings import SessionSettings

    registry = VoiceRegistry(discover_voices())
    own = "espeak-en-us-female"
    assert voice_for(registry, SessionSettings("a", avatar_voice_id=own)).voice_id == own
    assert voice_for(registry, SessionSettings("a", avatar_voice_id=own, language="en-GB")).voice_id == own
    assert voice_for(registry, SessionSettings("a", avatar_voice_id=own, language="de")).language == "de"
    chosen = SessionSettings("a", avatar_voice_id=own, voice_id=PIPER_JOE.voice_id)
    assert voice_for(registry, chosen) == PIPER_JOE
    assert voice_for(registry, SessionSettings("a")) == PIPER_JOE


@pytest.mark.parametrize(
    ("cores", "workers", "ray", "threads"),
    [(2, None, None, 1), (2, 0, None, 2), (2, 1, None, 2), (8, 2, None, 2), (8, 8, None, 1), (1, 0, None, 1),
     (2, None, "auto", 1)],
)  # fmt: skip
def test_piper_threads_follow_the_cores_each_session_host_has(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int | None, ray: str | None, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert Settings(workers=workers, ray_address=ray).resolved_piper_threads == threads
    assert Settings(workers=workers, piper_threads=3).resolved_piper_threads == 3


def test_the_piper_factory_runs_the_model_on_the_threads_asked_for() -> None:
    tts = tts_factories(piper_int8=False, piper_threads=1)["piper"]()
    assert isinstance(tts, SentenceTTS) and isinstance(tts.engine, PiperEngine)
    model: Any = tts.engine.model()
    assert model.session.get_session_options().intra_op_num_threads == 1


def test_a_session_host_keeps_opencv_to_its_own_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cv2

    from liveavatar.session.dialogue import Brain
    from liveavatar.session.kit import build_kit

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    before = cv2.getNumThreads()
    try:
        build_kit(Settings(workers=2, data_dir=tmp_path), Brain(None, None, None))  # type: ignore[arg-type]
        assert cv2.getNumThreads() == 1  # a worker per core: no OpenCV pool spinning beside it
        build_kit(Settings(workers=0, data_dir=tmp_path), Brain(None, None, None))  # type: ignore[arg-type]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
