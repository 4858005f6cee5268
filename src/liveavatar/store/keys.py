"""API keys: created by the operator, stored as SHA-256 hashes."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from liveavatar.clock import now_ms
from liveavatar.store.models import ApiKey, SessionRow
from liveavatar.store.sessions import LIVE_STATES


class KeyRepository:
    """Create, find, list and revoke API keys."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add(self, name: str, key_hash: str, prefix: str) -> ApiKey:
        """Store a new key's hash."""
        async with self._sessionmaker() as db, db.begin():
            row = ApiKey(name=name, key_hash=key_hash, prefix=prefix, created_at=now_ms(), disabled=False)
            db.add(row)
        return row

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not."""
        async with self._sessionmaker() as db:
            return await db.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    async def get(self, key_id: int) -> ApiKey | None:
        """The key with this id."""
        async with self._sessionmaker() as db:
            return await db.get(ApiKey, key_id)

    async def all(self) -> list[ApiKey]:
        """Every key, oldest first."""
        async with self._sessionmaker() as db:
            return list(await db.scalars(select(ApiKey).order_by(ApiKey.id)))

    async def count_active(self) -> int:
        """How many keys are neither revoked nor disabled."""
        return sum(1 for key in await self.all() if key.revoked_at is None and not key.disabled)

    async def find(self, ref: str) -> ApiKey | None:
        """A key by id, name or the prefix shown by `keys list`."""
        for key in await self.all():
            if ref in (str(key.id), key.name, key.prefix):
                return key
        return None

    async def blocked_live_sessions(self) -> list[tuple[str, str]]:
        """(session id, why) for every live session whose key is revoked or disabled."""
        async with self._sessionmaker() as db:
            rows = await db.execute(
                select(SessionRow.id, ApiKey.revoked_at)
                .join(ApiKey, SessionRow.owner_id == ApiKey.id)
                .where(
                    SessionRow.status.in_([int(s) for s in LIVE_STATES]),
                    or_(ApiKey.revoked_at.is_not(None), ApiKey.disabled.is_(True)),
                )
            )
            return [(session_id, "API key revoked" if revoked else "API key disabled") for session_id, revoked in rows]

    async def update(self, key_id: int, *, revoked: bool | None = None, disabled: bool | None = None) -> None:
        """Revoke a key for good, or disable/enable it."""
        async with self._sessionmaker() as db, db.begin():
            row = await db.get(ApiKey, key_id)
            if row is None:
                return
            if revoked:
                row.revoked_at = row.revoked_at or now_ms()
            if disabled is not None:
                row.disabled = disabled
