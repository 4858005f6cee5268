"""A live session's settings: set at create, changed live by `set-params`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from liveavatar.protocol import PROFILES, ProtocolError, SetParams, TransportProfile
from liveavatar.speech.turns import TurnSettings
from liveavatar.speech.voices import VoiceRegistry

Mode = Literal[1, 2]


@dataclass(frozen=True)
class SessionSettings:
    """Voice, language, mode, background and listening settings of one session."""

    avatar_id: str
    mode: Mode = 1
    voice_id: str | None = None
    voice_url: str | None = None
    language: str | None = None
    background_url: str | None = None
    knowledge_id: str | None = None
    speed: float = 1.0
    pron_map: dict[str, str] = field(default_factory=dict)
    stt_language: str | None = None
    stt_type: str | None = None
    turn: TurnSettings = field(default_factory=TurnSettings)
    profile: TransportProfile = PROFILES["webrtc"]
    avatar_voice_id: str | None = None
    """The avatar's own voice: spoken with when no voice was chosen and the language allows it."""

    @classmethod
    def from_create(cls, avatar_id: str, mode: int, params: dict[str, Any]) -> SessionSettings:
        """The settings a session starts with, from its stored create parameters."""
        voice = params.get("voice_params") or {}
        turn = voice.get("turn_detection") or {}
        return cls(
            avatar_id=avatar_id,
            mode=2 if mode == 2 else 1,
            voice_id=params.get("voice_id"),
            voice_url=params.get("voice_url"),
            language=params.get("language"),
            background_url=params.get("background_url"),
            knowledge_id=params.get("knowledge_id"),
            speed=float(voice.get("speed", 1.0)),
            pron_map=dict(voice.get("pron_map") or {}),
            stt_language=voice.get("stt_language"),
            stt_type=voice.get("stt_type"),
            turn=TurnSettings(**turn),
            profile=PROFILES.get(str(params.get("transport_profile") or "webrtc"), PROFILES["webrtc"]),
        )

    def updated(self, change: SetParams, voices: VoiceRegistry) -> SessionSettings:
        """These settings with a `set-params` command applied; ProtocolError (1003) when it names unknowns."""
        if change.voice_id is not None and voices.get(change.voice_id) is None:
            raise _bad(change, f"voice {change.voice_id!r} does not exist")
        if change.lang is not None and not voices.speaks(change.lang):
            raise _bad(change, f"language {change.lang!r} is not supported")
        turn = self.turn
        if change.turn_detection is not None:
            given = {k: v for k, v in vars(change.turn_detection).items() if v is not None}
            turn = replace(turn, **given)
        return replace(
            self,
            mode=change.mode or self.mode,
            voice_id=change.voice_id or self.voice_id,
            voice_url=change.voice_url or self.voice_url,
            language=change.lang or self.language,
            background_url=change.bgurl or self.background_url,
            speed=change.speed if change.speed is not None else self.speed,
            pron_map=dict(change.pron_map) if change.pron_map is not None else self.pron_map,
            stt_language=change.stt_language or self.stt_language,
            stt_type=change.stt_type or self.stt_type,
            turn=turn,
        )


def _bad(change: SetParams, reason: str) -> ProtocolError:
    return ProtocolError(reason, msg_type="command", mid=change.mid, cmd=change.cmd)
