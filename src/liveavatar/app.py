"""The application: builds the services once per process and the HTTP app that serves them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from liveavatar import __version__
from liveavatar.api import catalog, knowledge, sessions, signalling, tokens
from liveavatar.api.compat import LenientJsonMiddleware, cors_options
from liveavatar.api.envelope import GuardMiddleware, install_error_handlers
from liveavatar.config import Settings
from liveavatar.knowledge.ingest import Ingestor
from liveavatar.knowledge.jobs import IngestionJobs
from liveavatar.llm import build_llm
from liveavatar.ratelimit import RateLimiter
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.security import TokenSigner, load_secret
from liveavatar.services import Services
from liveavatar.session.dialogue import Brain, IndexRetriever
from liveavatar.session.host import HostLimits, SessionHost
from liveavatar.session.listening import Ears
from liveavatar.speech.stt import WhisperSTT
from liveavatar.speech.vad import SileroVAD
from liveavatar.speech.voices import VoiceRegistry, discover_voices
from liveavatar.store import Store
from liveavatar.transport.ice import advertise_hosts

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).with_name("web")


def build_services(settings: Settings) -> Services:
    """Everything the server needs, created (not started) from the settings."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url)
    avatars = AvatarRegistry(settings.data_dir / "avatars", settings.pack_dir)
    voices = VoiceRegistry(discover_voices())
    limits = HostLimits(settings.max_sessions, settings.join_token_ttl, settings.rejoin_grace)
    advertise_hosts(settings.ice_hosts)
    ears = Ears(vad=SileroVAD(), stt=WhisperSTT(cache_dir=settings.data_dir / "models"))
    ingestor = Ingestor(
        settings.data_dir / "knowledge",
        allow_private_urls=settings.allow_private_urls,
        embeddings=settings.knowledge_embeddings,
    )
    brain = Brain(build_llm(settings.llm_settings()), settings.llm_settings(), IndexRetriever(ingestor.indexes))
    return Services(
        settings=settings,
        store=store,
        signer=TokenSigner(load_secret(settings.data_dir)),
        limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        avatars=avatars,
        voices=voices,
        host=SessionHost(
            store,
            limits,
            avatars=avatars,
            voices=voices,
            ice_servers=settings.ice_servers,
            allow_private_urls=settings.allow_private_urls,
            ears=ears,
            brain=brain,
        ),
        ears=ears,
        knowledge=IngestionJobs(ingestor),
        brain=brain,
    )


def load_models(services: Services) -> None:
    """Load the listening models and the default voice (blocking; run in a worker thread)."""
    try:
        services.ears.load()
        services.voices.warm_up()
    except Exception:
        log.exception("loading the speech models failed; they load again on first use")


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; services start and stop with its lifespan."""
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.store.migrate()
        await asyncio.to_thread(services.avatars.prepare)
        await services.host.start()
        services.knowledge.resume(await services.store.knowledge.all())
        # Speech models load in the background: the server answers at once, the first reply rarely waits.
        warm_up = asyncio.create_task(asyncio.to_thread(load_models, services), name="warm-up")
        try:
            yield
        finally:
            await asyncio.gather(warm_up, return_exceptions=True)
            await services.host.aclose()
            await services.knowledge.aclose()
            await services.brain.llm.aclose()
            await services.store.aclose()

    app = FastAPI(
        title="liveavatar",
        version=__version__,
        summary="Self-hosted streaming avatars, compatible with the AKool Streaming Avatar API.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (tokens, sessions, signalling, catalog, knowledge):
        app.include_router(module.router)

    if (WEB_DIR / "index.html").exists():
        app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

        @app.get("/", include_in_schema=False)
        async def demo_page() -> FileResponse:
            return FileResponse(WEB_DIR / "index.html")
    else:

        @app.get("/", include_in_schema=False)
        async def api_docs() -> RedirectResponse:
            return RedirectResponse("/docs")

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, object]:
        return {"ok": True, **services.host.stats()}

    # Outermost last: CORS answers preflights and marks every reply (errors included); the guard sees
    # bodies already typed as JSON.
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        large_bodies={knowledge.UPLOAD_PATH: knowledge.UPLOAD_MAX_BYTES + 1024 * 1024},
    )
    app.add_middleware(LenientJsonMiddleware)
    app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origins))
    return app
