"""The database: engine, migrations and the repositories built on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from liveavatar.store.avatars import AvatarRepository
from liveavatar.store.keys import KeyRepository
from liveavatar.store.knowledge import KnowledgeRepository
from liveavatar.store.nodes import NodeRepository
from liveavatar.store.sessions import SessionRepository

MIGRATIONS = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI read while the server writes; the timeout rides out short write locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Store:
    """Owns the engine; hands out one repository per kind of object."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.keys = KeyRepository(sessionmaker)
        self.sessions = SessionRepository(sessionmaker)
        self.knowledge = KnowledgeRepository(sessionmaker)
        self.nodes = NodeRepository(sessionmaker)
        self.avatars = AvatarRepository(sessionmaker)

    async def migrate(self) -> None:
        """Bring the schema up to date (Alembic, idempotent)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
