"""The application: builds the services once per process and the HTTP app that serves them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.middleware.cors import CORSMiddleware

from liveavatar import __version__
from liveavatar.api import catalog, knowledge, sessions, signalling, tokens, webpack
from liveavatar.api.auth import enforce_revocations
from liveavatar.api.compat import LenientJsonMiddleware, cors_options
from liveavatar.api.envelope import EnvelopeResponse, GuardMiddleware, install_error_handlers
from liveavatar.avatars.jobs import AvatarJobs
from liveavatar.config import Settings
from liveavatar.knowledge.ingest import Ingestor
from liveavatar.knowledge.jobs import IngestionJobs
from liveavatar.llm import build_llm
from liveavatar.memory import freeze_startup, trim_periodically
from liveavatar.metrics import Metrics, TimedLLM, TimedRetriever
from liveavatar.ratelimit import RateLimiter
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.security import TokenSigner, load_secret
from liveavatar.services import Services
from liveavatar.session.dialogue import Brain, IndexRetriever
from liveavatar.session.director import Director, HostStarter
from liveavatar.session.host import SessionHost
from liveavatar.speech.voices import VoiceRegistry, voice_registry
from liveavatar.store import Store

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).with_name("web")


def _start_hosts(
    settings: Settings, brain: Brain, avatars: AvatarRegistry, voices: VoiceRegistry
) -> tuple[int, HostStarter, Callable[[], None] | None]:
    """How many session hosts to keep, how to start one, and what loads their models in this process."""
    if settings.ray_address:
        from liveavatar.session.rayhost import RayCluster

        cluster = RayCluster(settings)
        return cluster.slots(), cluster.start_host, None
    workers = settings.resolved_workers
    if workers > 0:

        async def start_worker(host_id: str) -> SessionHost:
            from liveavatar.session.workers import WorkerHost

            return await WorkerHost.start(host_id, settings, brain)

        return workers, start_worker, None
    # In-process: sessions share this process's registries and models.
    from liveavatar.session.kit import build_kit, host_limits, load_models
    from liveavatar.session.local import LocalHost

    kit = build_kit(settings, brain, avatars=avatars, voices=voices)

    async def start_local(host_id: str) -> SessionHost:
        return LocalHost(host_id, kit, host_limits(settings))

    return 1, start_local, lambda: load_models(kit)


def build_services(settings: Settings) -> Services:
    """Everything the server needs, created (not started) from the settings."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url)
    avatars = AvatarRegistry(settings.data_dir / "avatars", settings.pack_dir, settings.video_size)
    voices = voice_registry(settings)
    ingestor = Ingestor(
        settings.data_dir / "knowledge",
        allow_private_urls=settings.allow_private_urls,
        embeddings=settings.knowledge_embeddings,
    )
    # One LLM and one retriever per machine: worker processes reach these through their pipes.
    metrics = Metrics()
    brain = Brain(
        TimedLLM(build_llm(settings.llm_settings()), metrics.llm_first_token_seconds),
        settings.llm_settings(),
        TimedRetriever(IndexRetriever(ingestor.indexes), metrics.retrieval_seconds),
    )
    slots, start_host, load_models = _start_hosts(settings, brain, avatars, voices)
    return Services(
        settings=settings,
        store=store,
        signer=TokenSigner(load_secret(settings.data_dir)),
        limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        avatars=avatars,
        voices=voices,
        director=Director(
            store,
            node_id=settings.resolved_node_id,
            slots=slots,
            start_host=start_host,
            max_sessions=settings.max_sessions,
            metrics=metrics,
        ),
        knowledge=IngestionJobs(ingestor),
        brain=brain,
        avatar_jobs=AvatarJobs(store, avatars, voices, allow_private_urls=settings.allow_private_urls),
        load_models=load_models,
    )


async def warm(services: Services) -> None:
    """Load the speech models, then keep them out of the garbage collector's way (unless sessions started
    meanwhile: frozen objects are never collected)."""
    if services.load_models is not None:
        await asyncio.to_thread(services.load_models)
    if services.director.live_count == 0:
        freeze_startup()


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; services start and stop with its lifespan."""
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.store.migrate()
        await asyncio.to_thread(services.avatars.prepare)
        await services.director.start()
        await services.avatar_jobs.start()
        services.knowledge.resume(await services.store.knowledge.all())
        freeze_startup()  # no session exists yet
        # Speech models load in the background: the server answers at once, the first reply rarely waits.
        warm_up = asyncio.create_task(warm(services), name="warm-up")
        revocations = asyncio.create_task(enforce_revocations(services), name="revocations")
        trimming = asyncio.create_task(trim_periodically(), name="trim")
        try:
            yield
        finally:
            revocations.cancel()
            trimming.cancel()
            await asyncio.gather(warm_up, revocations, trimming, return_exceptions=True)
            await services.avatar_jobs.aclose()
            await services.director.aclose()
            await services.knowledge.aclose()
            await services.brain.llm.aclose()
            await services.store.aclose()

    app = FastAPI(
        title="liveavatar",
        version=__version__,
        summary="Self-hosted streaming avatars, compatible with the AKool Streaming Avatar API.",
        lifespan=lifespan,
        default_response_class=EnvelopeResponse,
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (tokens, sessions, signalling, catalog, knowledge, webpack):
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
    async def health() -> JSONResponse:
        """200 while at least one session host is up (503 otherwise); counts only, nothing per tenant."""
        director = services.director
        stats = await director.stats()
        body = {
            "ok": bool(stats),
            "hosts": len(stats),
            "live_sessions": director.live_count,
            "capacity": director.max_sessions,
            "joined_sessions": sum(s.joined_sessions for s in stats),
            "inbound_audio_frames": sum(s.inbound_audio_frames for s in stats),
            "inbound_video_frames": sum(s.inbound_video_frames for s in stats),
        }
        return JSONResponse(body, status_code=200 if stats else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics: sessions, hosts, latencies (no keys, texts or tenant ids)."""
        await services.director.stats()
        return Response(services.director.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # Outermost last: CORS answers preflights and marks every reply (errors included); the guard sees
    # bodies already typed as JSON.
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        large_bodies={
            knowledge.UPLOAD_PATH: knowledge.UPLOAD_MAX_BYTES + 1024 * 1024,
            catalog.UPLOAD_PATH: catalog.UPLOAD_MAX_BYTES + 1024 * 1024,
        },
    )
    app.add_middleware(LenientJsonMiddleware)
    app.add_middleware(CORSMiddleware, **cors_options(settings.cors_origins))
    return app
