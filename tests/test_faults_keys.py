"""Fault suite, keys (finding 8): revoking or disabling a key, from the CLI in another process, stops it at once.

Its live sessions close (status 3, with the reason) and its sessions' join tokens are refused. Real server,
real CLI, real SQLite, real aiortc peer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest

from conftest import Deployment
from liveavatar.client import ApiError, Connection, LiveAvatarApi
from servers import Server, cli, create_key

LOOPBACK = ["127.0.0.1"]


@pytest.fixture(scope="module")
def backend() -> str:
    """The test reads session rows straight from SQLite."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    return Deployment(make_server(args=("--max-sessions", "16")).start())


def session_row(server: Server, session_id: str) -> tuple[int, str | None]:
    """(status, close_reason) as stored."""
    with sqlite3.connect(server.data_dir / "liveavatar.db") as db:
        status, reason = db.execute("select status, close_reason from sessions where id = ?", (session_id,)).fetchone()
    return int(status), reason


async def until_closed(server: Server, session_id: str, timeout: float = 5.0) -> tuple[int, str | None]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        row = session_row(server, session_id)
        if row[0] != 2 and row[0] != 1 or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(("verb", "reason", "join_code"), [("revoke", "revoked", 1101), ("disable", "disabled", 1200)])
async def test_a_blocked_key_loses_its_sessions_and_join_tokens_at_once(
    deployment: Deployment, verb: str, reason: str, join_code: int
) -> None:
    server = deployment.server
    name = f"carol-{verb}"
    key = create_key(server.data_dir, name, server.env)
    async with LiveAvatarApi(server.url, api_key=key) as api:
        live = await api.create_session("astronaut")
        waiting = await api.create_session("astronaut")
        conn = await Connection.join(live["credentials"], ice_hosts=LOOPBACK)
        try:
            await asyncio.wait_for(conn.video.get(), 15)
            assert session_row(server, live["_id"])[0] == 2
            await asyncio.to_thread(cli, "keys", verb, name, data_dir=server.data_dir, env=server.env)
            status, why = await until_closed(server, live["_id"])
            assert status == 3 and why is not None and reason in why
            assert (await until_closed(server, waiting["_id"]))[0] == 3
            with pytest.raises(ApiError) as refused:
                await Connection.join(waiting["credentials"], ice_hosts=LOOPBACK)
            assert refused.value.code == join_code
        finally:
            await conn.aclose()
    # Another key's session is untouched.
    bob = deployment.bob.create_session()
    assert session_row(server, bob["_id"])[0] == 1
    deployment.bob.close_session(bob["_id"])
