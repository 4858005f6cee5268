"""The process-wide services the HTTP app and the CLI share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from liveavatar.avatars.jobs import AvatarJobs
from liveavatar.config import Settings
from liveavatar.knowledge.jobs import IngestionJobs
from liveavatar.ratelimit import RateLimiter
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.security import TokenSigner
from liveavatar.session.dialogue import Brain
from liveavatar.session.director import Director
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
    director: Director
    """Places sessions on session hosts (in-process, worker processes or Ray actors) and records them."""
    knowledge: IngestionJobs
    brain: Brain
    """The LLM and retrieval, one per machine: worker processes reach them through their pipes."""
    avatar_jobs: AvatarJobs
    """Builds custom avatars in the background."""
    load_models: Callable[[], None] | None = None
    """Loads the speech models of in-process sessions (blocking), when sessions run in this process."""
