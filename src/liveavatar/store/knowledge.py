"""Knowledge base rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from liveavatar.clock import now_ms
from liveavatar.errors import KnowledgeExists
from liveavatar.store.models import KnowledgeBase

SOURCE_FIELDS = frozenset({"docs", "urls"})
"""The fields whose change makes a base's index stale (and bumps its revision)."""


class KnowledgeRepository:
    """Create, read, update, list and delete knowledge bases, each scoped to its owner."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, row: KnowledgeBase) -> KnowledgeBase:
        """Store a new base; a duplicate name for the same owner raises KnowledgeExists."""
        try:
            async with self._sessionmaker() as db, db.begin():
                db.add(row)
        except IntegrityError as exc:
            raise KnowledgeExists(f"a knowledge base named {row.name!r} already exists") from exc
        return row

    async def get(self, kb_id: str, owner_id: int) -> KnowledgeBase | None:
        """The owner's base with this id."""
        async with self._sessionmaker() as db:
            row = await db.get(KnowledgeBase, kb_id)
        return row if row is not None and row.owner_id == owner_id else None

    async def page(self, owner_id: int, *, page: int, size: int, name: str | None) -> list[KnowledgeBase]:
        """One page of the owner's bases, newest first, optionally filtered by a name substring."""
        query = select(KnowledgeBase).where(KnowledgeBase.owner_id == owner_id)
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(KnowledgeBase.name.ilike(f"%{escaped}%", escape="\\"))
        query = query.order_by(KnowledgeBase.create_time.desc(), KnowledgeBase.id)
        async with self._sessionmaker() as db:
            return list(await db.scalars(query.offset((page - 1) * size).limit(size)))

    async def update(self, kb_id: str, owner_id: int, changes: dict[str, Any]) -> KnowledgeBase | None:
        """Apply `changes` to the owner's base (a new revision when its sources change); None when it does not exist."""
        try:
            async with self._sessionmaker() as db, db.begin():
                row = await db.get(KnowledgeBase, kb_id)
                if row is None or row.owner_id != owner_id:
                    return None
                for field, value in changes.items():
                    setattr(row, field, value)
                if SOURCE_FIELDS & changes.keys():
                    row.revision += 1
                row.update_time = now_ms()
        except IntegrityError as exc:
            raise KnowledgeExists(f"a knowledge base named {changes.get('name')!r} already exists") from exc
        return row

    async def new_revision(self, kb_id: str, owner_id: int) -> KnowledgeBase | None:
        """Bump the owner's base to a new revision (its uploads changed); None when it does not exist."""
        async with self._sessionmaker() as db, db.begin():
            row = await db.get(KnowledgeBase, kb_id)
            if row is None or row.owner_id != owner_id:
                return None
            row.revision += 1
            row.update_time = now_ms()
        return row

    async def all(self) -> list[KnowledgeBase]:
        """Every base of every owner (for resuming ingestion after a restart)."""
        async with self._sessionmaker() as db:
            return list(await db.scalars(select(KnowledgeBase)))

    async def delete(self, kb_id: str, owner_id: int) -> bool:
        """Delete the owner's base; False when it does not exist."""
        async with self._sessionmaker() as db, db.begin():
            result = await db.execute(
                delete(KnowledgeBase).where(KnowledgeBase.id == kb_id, KnowledgeBase.owner_id == owner_id)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]
