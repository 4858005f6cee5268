"""The process-wide services the HTTP app and the CLI share."""

from __future__ import annotations

from dataclasses import dataclass

from liveavatar.config import Settings
from liveavatar.knowledge.jobs import IngestionJobs
from liveavatar.ratelimit import RateLimiter
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.security import TokenSigner
from liveavatar.session.dialogue import Brain
from liveavatar.session.host import SessionHost
from liveavatar.session.listening import Ears
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store import Store


@dataclass
class Services:
    """Everything a request handler may need, built once per process."""

    settings: Settings
    store: Store
    signer: TokenSigner
    limiter: RateLimiter
    avatars: AvatarRegistry
    voices: VoiceRegistry
    host: SessionHost
    ears: Ears
    knowledge: IngestionJobs
    brain: Brain
