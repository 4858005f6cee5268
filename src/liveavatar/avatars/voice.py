"""Which installed voice an avatar speaks with unless a session asks for another."""

from __future__ import annotations

from liveavatar.errors import ParamError
from liveavatar.speech.base import Voice
from liveavatar.speech.voices import ENGINE_PREFERENCE, VoiceRegistry


def matching_voice(voices: VoiceRegistry, gender: str, language: str = "en") -> Voice | None:
    """The language's best voice of the avatar's gender (engine preference, then the default's locale)."""
    try:
        default = voices.default_voice(language)
    except ParamError:
        return None
    if gender not in ("male", "female") or default.gender == gender:
        return default
    primary = language.lower().split("-", 1)[0]
    same = [voice for voice in voices.list(gender=gender) if voice.language.lower().split("-", 1)[0] == primary]
    if not same:
        return default

    def rank(voice: Voice) -> tuple[int, bool]:
        engine = ENGINE_PREFERENCE.index(voice.engine) if voice.engine in ENGINE_PREFERENCE else len(ENGINE_PREFERENCE)
        return engine, voice.locale != default.locale

    return min(same, key=rank)


def matching_voice_id(voices: VoiceRegistry, gender: str, language: str = "en") -> str:
    """matching_voice's id, "" when no voice speaks the language."""
    voice = matching_voice(voices, gender, language)
    return voice.voice_id if voice is not None else ""
