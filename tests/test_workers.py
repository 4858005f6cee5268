"""Sessions in real worker processes: spread over workers, a killed worker's sessions fail, the others stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from liveavatar.client import Connection, LiveAvatarApi
from servers import Server, create_key

LOOPBACK = ["127.0.0.1"]
HOST_DIED = "the process hosting this session died"


@pytest.fixture(scope="module")
def backend() -> str:
    """Workers do not depend on storage: SQLite only (read directly after the server stops)."""
    return "sqlite"


def worker_pids(server: Server) -> list[int]:
    """Process ids of the server's worker processes (its children)."""
    assert server.process is not None
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
            children.append(int(stat.parent.name))  # not multiprocessing's resource tracker
    return sorted(children)


def running(pid: int) -> bool:
    """Whether a process with this id exists."""
    return Path(f"/proc/{pid}").exists()


def health(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/healthz", timeout=5)


def wait_for_hosts(server: Server, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = health(server)
        if response.status_code == 200 and response.json()["hosts"] == count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} hosts never came up: {health(server).text}\n{server.log()[-3000:]}")


def sessions_per_host(server: Server) -> dict[str, float]:
    """`liveavatar_host_sessions` from /metrics, by host."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    found = {}
    for line in text.splitlines():
        if line.startswith("liveavatar_host_sessions{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


async def frames_in(conn: Connection, seconds: float) -> int:
    """Video frames received over `seconds`, counted after dropping what was queued."""
    while not conn.video.empty():
        conn.video.get_nowait()
    loop = asyncio.get_running_loop()
    start, count = loop.time(), 0
    while loop.time() - start < seconds:
        await asyncio.wait_for(conn.video.get(), 5)
        count += 1
    return count


async def status_of(api: LiveAvatarApi, session_id: str) -> dict[str, Any]:
    return await api.session(session_id)


async def test_sessions_on_two_workers_survive_the_death_of_one(make_server: Callable[..., Server]) -> None:
    server = make_server(args=("--workers", "2", "--max-sessions", "8")).start(timeout=180)
    wait_for_hosts(server, 2)
    pids = worker_pids(server)
    assert len(pids) == 2, pids
    async with LiveAvatarApi(server.url, api_key=create_key(server.data_dir, "k", server.env)) as api:
        first = await api.create_session("astronaut")
        second = await api.create_session("astronaut")
        per_host = sessions_per_host(server)
        assert sorted(per_host.values()) == [1.0, 1.0], per_host  # one on each worker
        conns = [await Connection.join(s["credentials"], ice_hosts=LOOPBACK) for s in (first, second)]
        try:
            for conn in conns:
                await asyncio.wait_for(conn.video.get(), 20)
            assert [(await status_of(api, s["_id"]))["status"] for s in (first, second)] == [2, 2]

            # Kill one worker; while that is noticed, the other session keeps streaming at 25 fps.
            victim = pids[0]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            survivor_frames = (
                asyncio.ensure_future(frames_in(conns[1], 2.0)),
                asyncio.ensure_future(frames_in(conns[0], 2.0)),
            )
            failed: dict[str, Any] | None = None
            while failed is None and time.monotonic() - killed_at < 2.0:
                for session in (first, second):
                    detail = await status_of(api, session["_id"])
                    if detail["status"] == 4:
                        failed = detail
                await asyncio.sleep(0.05)
            assert failed is not None, "the dead worker's session was not marked failed within 2 s"
            assert failed["close_reason"] == HOST_DIED and failed["credentials"] == {}
            dead = 0 if failed["_id"] == first["_id"] else 1
            alive = 1 - dead
            assert (await status_of(api, (first, second)[alive]["_id"]))["status"] == 2
            # The survivor's stream (whichever it is) keeps 25 fps through the other worker's death.
            done = await asyncio.gather(*survivor_frames, return_exceptions=True)
            counts = [done[0], done[1]]
            survivor_count = counts[0] if alive == 1 else counts[1]
            assert isinstance(survivor_count, int) and 45 <= survivor_count <= 55, counts

            # A replacement worker comes up; a new session streams.
            wait_for_hosts(server, 2, timeout=120)
            assert len(set(worker_pids(server)) - {victim}) == 2
            third = await api.create_session("astronaut")
            conns.append(await Connection.join(third["credentials"], ice_hosts=LOOPBACK))
            await asyncio.wait_for(conns[-1].video.get(), 20)
            assert await frames_in(conns[-1], 1.0) >= 20
            assert await frames_in(conns[alive], 1.0) >= 20
        finally:
            for conn in conns:
                await conn.aclose()

    live_ids = [(first, second)[alive]["_id"], third["_id"]]
    assert await asyncio.to_thread(server.stop) in (0, -15)  # graceful: every worker closes its sessions
    with sqlite3.connect(server.data_dir / "liveavatar.db") as db:
        rows = dict(db.execute("SELECT id, close_reason FROM sessions WHERE status = 4").fetchall())
        assert db.execute("SELECT count(*) FROM sessions WHERE status IN (1, 2)").fetchone()[0] == 0
    assert rows[(first, second)[dead]["_id"]] == HOST_DIED
    assert all(rows[sid] == "server shut down" for sid in live_ids), rows
    assert not [pid for pid in pids if running(pid)]  # no worker outlives the server
