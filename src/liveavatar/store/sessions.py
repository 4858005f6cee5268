"""Session rows: the history of every session, live or ended."""

from __future__ import annotations

from collections.abc import Collection
from enum import IntEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from liveavatar.clock import now_ms
from liveavatar.store.models import SessionRow


class Status(IntEnum):
    """Session status as the API reports it."""

    QUEUEING = 1
    LIVE = 2
    CLOSED = 3
    FAILED = 4


LIVE_STATES = (Status.QUEUEING, Status.LIVE)


class SessionRepository:
    """Create, read, list and move sessions through their states."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, row: SessionRow) -> SessionRow:
        """Store a new session."""
        async with self._sessionmaker() as db, db.begin():
            db.add(row)
        return row

    async def get(self, session_id: str, owner_id: int | None = None) -> SessionRow | None:
        """The session, if it exists (and belongs to `owner_id` when given)."""
        async with self._sessionmaker() as db:
            row = await db.get(SessionRow, session_id)
        if row is None or (owner_id is not None and row.owner_id != owner_id):
            return None
        return row

    async def page(
        self, owner_id: int, *, page: int, size: int, status: int | None = None
    ) -> tuple[int, list[SessionRow]]:
        """One page of the owner's sessions, newest first, and the total count."""
        where = [SessionRow.owner_id == owner_id]
        if status is not None:
            where.append(SessionRow.status == status)
        async with self._sessionmaker() as db:
            total = await db.scalar(select(func.count()).select_from(SessionRow).where(*where)) or 0
            rows = await db.scalars(
                select(SessionRow)
                .where(*where)
                .order_by(SessionRow.create_time.desc(), SessionRow.id)
                .offset((page - 1) * size)
                .limit(size)
            )
            return total, list(rows)

    async def set_status(self, session_id: str, status: Status, reason: str | None = None) -> SessionRow | None:
        """Move a live session to `status`; ended sessions stay as they are. Returns the row."""
        now = now_ms()
        values: dict[str, Any] = {"status": int(status), "update_time": now}
        if status == Status.LIVE:
            values["start_time"] = now
        if status in (Status.CLOSED, Status.FAILED):
            values["end_time"] = now
            values["close_reason"] = reason
        async with self._sessionmaker() as db, db.begin():
            await db.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.status.in_([int(s) for s in LIVE_STATES]))
                .values(**values)
            )
            return await db.get(SessionRow, session_id)

    async def fail_orphans(self, reason: str, *, alive_nodes: Collection[str]) -> int:
        """Fail live sessions whose node is not among `alive_nodes` (or unknown); returns how many."""
        live = SessionRow.status.in_([int(s) for s in LIVE_STATES])
        orphaned = or_(SessionRow.node_id.is_(None), SessionRow.node_id.not_in(list(alive_nodes)))
        return await self._fail(and_(live, orphaned), reason)

    async def fail_host(self, host_id: str, reason: str) -> int:
        """Fail the live sessions of a host that died; returns how many."""
        return await self._fail(
            and_(SessionRow.host_id == host_id, SessionRow.status.in_([int(s) for s in LIVE_STATES])), reason
        )

    async def _fail(self, where: ColumnElement[bool], reason: str) -> int:
        now = now_ms()
        async with self._sessionmaker() as db, db.begin():
            result = await db.execute(
                update(SessionRow)
                .where(where)
                .values(status=int(Status.FAILED), end_time=now, update_time=now, close_reason=reason)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
