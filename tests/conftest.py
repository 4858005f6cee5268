"""Shared fixtures: a real PostgreSQL, real servers on each storage backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servers import Postgres, Server

_db_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the whole run (the CI machine installs the server package)."""
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn."""
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
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server on this module's backend, shared by the module's tests, with keys for alice and bob."""
    server = make_server()
    server.start()
    return Deployment(server)


def same_words(heard: list[str], said: list[str]) -> bool:
    """Speech recognition heard what was said, allowing one small slip (Whisper may hear "the" for "a")."""
    import difflib

    return difflib.SequenceMatcher(a=heard, b=said).ratio() >= 0.85
