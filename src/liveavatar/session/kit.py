"""What a session host process loads: registries, listening models, the dialogue brain, ICE set-up."""

from __future__ import annotations

import logging

import cv2

from liveavatar.config import Settings
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.session.dialogue import Brain
from liveavatar.session.listening import Ears
from liveavatar.session.local import HostLimits, SessionKit
from liveavatar.speech.stt import WhisperSTT
from liveavatar.speech.vad import SileroVAD
from liveavatar.speech.voices import VoiceRegistry, voice_registry
from liveavatar.transport.ice import advertise_hosts

log = logging.getLogger(__name__)


def host_limits(settings: Settings) -> HostLimits:
    """How long a host waits for its sessions' clients."""
    return HostLimits(join_timeout=settings.join_token_ttl, rejoin_grace=settings.rejoin_grace)


def build_kit(
    settings: Settings, brain: Brain, *, avatars: AvatarRegistry | None = None, voices: VoiceRegistry | None = None
) -> SessionKit:
    """Everything a host's sessions share, created (models not loaded yet) from the settings."""
    advertise_hosts(settings.ice_hosts)
    # OpenCV splits each call over a pool of a thread per core whose idle threads spin (sched_yield): in a
    # host with one core (a worker per core) that was ~4% of a core per worker in system time, for nothing
    cv2.setNumThreads(settings.host_cores)
    return SessionKit(
        avatars=avatars or AvatarRegistry(settings.data_dir / "avatars", settings.pack_dir, settings.video_size),
        voices=voices or voice_registry(settings),
        ice_servers=settings.ice_servers,
        allow_private_urls=settings.allow_private_urls,
        ears=Ears(vad=SileroVAD(), stt=WhisperSTT(cache_dir=settings.data_dir / "models")),
        brain=brain,
    )


def load_models(kit: SessionKit) -> None:
    """Load the listening models and the default voice (blocking; run in a worker thread)."""
    try:
        if kit.ears is not None:
            kit.ears.load()
        kit.voices.warm_up()
    except Exception:
        log.exception("loading the speech models failed; they load again on first use")
