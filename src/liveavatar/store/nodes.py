"""Nodes: the API processes serving sessions against this database, each seen alive by its heartbeat."""

from __future__ import annotations

import os

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from liveavatar.clock import now_ms
from liveavatar.store.models import NodeRow


class NodeRepository:
    """Register a node, beat its heartbeat, list the nodes still alive."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def register(self, node_id: str) -> None:
        """Record this process as `node_id`, starting now (a previous life of the same id is replaced)."""
        now = now_ms()
        async with self._sessionmaker() as db, db.begin():
            await db.execute(delete(NodeRow).where(NodeRow.id == node_id))
            db.add(NodeRow(id=node_id, pid=os.getpid(), started_at=now, seen_at=now))

    async def beat(self, node_id: str) -> None:
        """This node is alive now."""
        async with self._sessionmaker() as db, db.begin():
            await db.execute(update(NodeRow).where(NodeRow.id == node_id).values(seen_at=now_ms()))

    async def alive(self, seen_within_ms: int) -> list[str]:
        """Ids of the nodes seen within the last `seen_within_ms`."""
        async with self._sessionmaker() as db:
            rows = await db.scalars(select(NodeRow.id).where(NodeRow.seen_at >= now_ms() - seen_within_ms))
            return list(rows)

    async def remove(self, node_id: str) -> None:
        """This node stops (graceful shutdown)."""
        async with self._sessionmaker() as db, db.begin():
            await db.execute(delete(NodeRow).where(NodeRow.id == node_id))
