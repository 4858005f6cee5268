"""Custom avatar rows: each owned by one API key (or by the operator, visible to every key)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from liveavatar.clock import now_ms
from liveavatar.errors import AlreadyExists
from liveavatar.store.models import AvatarRow


class AvatarStatus(IntEnum):
    """Build status of an avatar, as the API reports it."""

    QUEUEING = 1
    PROCESSING = 2
    READY = 3
    FAILED = 4


BUILDING = (AvatarStatus.QUEUEING, AvatarStatus.PROCESSING)


class AvatarRepository:
    """Create, read, update and delete custom avatars; every read is scoped to what a key may see."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, row: AvatarRow) -> AvatarRow:
        """Store a new avatar; an id its owner (or the operator) already uses raises AlreadyExists (1222)."""
        async with self._sessionmaker() as db, db.begin():
            query = select(AvatarRow.id).where(AvatarRow.avatar_id == row.avatar_id)
            if row.owner_id is not None:  # the operator's ids are taken for everyone, and theirs for the operator
                query = query.where(or_(AvatarRow.owner_id.is_(None), AvatarRow.owner_id == row.owner_id))
            taken = await db.scalar(query.limit(1))
            if taken is not None:
                raise AlreadyExists(f"an avatar with the id {row.avatar_id!r} already exists")
            db.add(row)
            try:
                await db.flush()
            except IntegrityError as exc:
                raise AlreadyExists(f"an avatar with the id {row.avatar_id!r} already exists") from exc
        return row

    async def get(self, avatar_id: str, owner_id: int | None) -> AvatarRow | None:
        """The avatar `owner_id` sees under this id: its own, else the operator's."""
        query = select(AvatarRow).where(AvatarRow.avatar_id == avatar_id)
        async with self._sessionmaker() as db:
            rows = list(await db.scalars(query))
        own = [row for row in rows if owner_id is not None and row.owner_id == owner_id]
        shared = [row for row in rows if row.owner_id is None]
        found = own or shared
        return found[0] if found else None

    async def by_id(self, row_id: str) -> AvatarRow | None:
        """The avatar with this internal id."""
        async with self._sessionmaker() as db:
            return await db.get(AvatarRow, row_id)

    async def visible(self, owner_id: int | None) -> list[AvatarRow]:
        """Every avatar `owner_id` may see (the operator's, then its own), oldest first."""
        shared = AvatarRow.owner_id.is_(None)
        scope = shared if owner_id is None else or_(shared, AvatarRow.owner_id == owner_id)
        query = select(AvatarRow).where(scope).order_by(AvatarRow.create_time, AvatarRow.id)
        async with self._sessionmaker() as db:
            return list(await db.scalars(query))

    async def all(self) -> list[AvatarRow]:
        """Every avatar of every owner, oldest first (for the CLI)."""
        async with self._sessionmaker() as db:
            return list(await db.scalars(select(AvatarRow).order_by(AvatarRow.create_time, AvatarRow.id)))

    async def building(self) -> list[AvatarRow]:
        """Avatars still queueing or processing (to resume after a restart), oldest first."""
        query = select(AvatarRow).where(AvatarRow.status.in_([int(s) for s in BUILDING]))
        async with self._sessionmaker() as db:
            return list(await db.scalars(query.order_by(AvatarRow.create_time, AvatarRow.id)))

    async def update(self, row_id: str, **changes: Any) -> AvatarRow | None:
        """Apply `changes` to an avatar; None when it no longer exists (deleted meanwhile)."""
        async with self._sessionmaker() as db, db.begin():
            row = await db.get(AvatarRow, row_id)
            if row is None:
                return None
            for field, value in changes.items():
                setattr(row, field, value)
            row.update_time = now_ms()
        return row

    async def delete(self, avatar_id: str, owner_id: int | None) -> AvatarRow | None:
        """Delete the owner's avatar with this id (the operator's when `owner_id` is None); the deleted row."""
        scope = AvatarRow.owner_id.is_(None) if owner_id is None else AvatarRow.owner_id == owner_id
        async with self._sessionmaker() as db, db.begin():
            row = await db.scalar(select(AvatarRow).where(AvatarRow.avatar_id == avatar_id, scope))
            if row is not None:
                await db.delete(row)
        return row
