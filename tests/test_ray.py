"""Sessions on a real local Ray cluster (a head and worker nodes as processes on loopback)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import liveavatar
from liveavatar.client import Connection, LiveAvatarApi
from servers import Server, create_key

ray_cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the `cluster` extra (ray) is not installed")

LOOPBACK = ["127.0.0.1"]
HOST_DIED = "the process hosting this session died"
FAST_HEALTH_CHECKS = {
    # A dead node is declared dead after ~1.5 s instead of the default ~15 s, so the test stays short.
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


@pytest.fixture(scope="module")
def backend() -> str:
    """The cluster does not depend on storage here: SQLite (PostgreSQL is the store for real clusters)."""
    return "sqlite"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node that runs no session (0 CPUs) and one worker node, as separate processes."""
    src = str(Path(liveavatar.__file__).resolve().parents[1])
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED", "RAY_worker_niceness")}
    # The nodes' worker processes import this checkout, unniced, without usage reports.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, saved["PYTHONPATH"]) if p)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray's own spelling)
    head = ray_cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS},
    )
    try:
        yield head
    finally:
        head.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for_hosts(server: Server, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/healthz", timeout=5)
        if response.status_code == 200 and response.json()["hosts"] == count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} session hosts never came up\n{server.log()[-3000:]}")


async def spoken_reply(conn: Connection, text: str) -> tuple[str, float]:
    """Say `text`; the bot's reply text and the loudest 20 ms of audio (RMS) while it spoke."""
    while not conn.audio.empty():
        conn.audio.get_nowait()
    conn.send_chat(text)
    reply = await conn.bot_reply(timeout=60)
    loudest = 0.0
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    while loop.time() < end:
        frame = await asyncio.wait_for(conn.audio.get(), 5)
        samples = frame.to_ndarray().astype(np.float64)
        loudest = max(loudest, float(np.sqrt(np.mean(np.square(samples)))))
    return reply, loudest


async def test_a_session_runs_on_a_ray_node_and_fails_when_the_node_dies(
    cluster: Any, make_server: Callable[..., Server]
) -> None:
    node = cluster.add_node(num_cpus=1)
    server = make_server(env={"LIVEAVATAR_RAY_ADDRESS": cluster.address, "LIVEAVATAR_RAY_HOSTS": "1"})
    server.start(timeout=300)
    wait_for_hosts(server, 1)
    async with LiveAvatarApi(server.url, api_key=create_key(server.data_dir, "k", server.env)) as api:
        # End to end through the actor: video, a spoken reply, close.
        session = await api.create_session("astronaut")
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            frame = await asyncio.wait_for(conn.video.get(), 30)
            assert (frame.width, frame.height) == (512, 512)
            reply, loudest = await spoken_reply(conn, "Hello from the cluster.")
            assert reply == "Hello from the cluster."
            assert loudest > 500  # speech, not silence
        finally:
            await conn.aclose()
        closed = await api.close_session(session["_id"])
        assert closed["status"] == 3

        # The node hosting the next session dies: the session is marked failed.
        session = await api.create_session("astronaut")
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            await asyncio.wait_for(conn.video.get(), 30)
            assert (await api.session(session["_id"]))["status"] == 2
            cluster.remove_node(node, allow_graceful=False)
            killed_at = time.monotonic()
            detail: dict[str, Any] = {}
            while time.monotonic() - killed_at < 30:
                detail = await api.session(session["_id"])
                if detail["status"] == 4:
                    break
                await asyncio.sleep(0.2)
            assert detail["status"] == 4 and detail["close_reason"] == HOST_DIED, detail
        finally:
            await conn.aclose()

        # A node joins: a new session host starts there and takes sessions again.
        cluster.add_node(num_cpus=1)
        wait_for_hosts(server, 1)
        session = await api.create_session("astronaut")
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            await asyncio.wait_for(conn.video.get(), 30)
        finally:
            await conn.aclose()
    assert await asyncio.to_thread(server.stop) in (0, -15)  # graceful: the actor closes its sessions
    with sqlite3.connect(server.data_dir / "liveavatar.db") as db:
        query = "SELECT status, close_reason FROM sessions WHERE id = ?"
        status, reason = db.execute(query, (session["_id"],)).fetchone()
    assert (status, reason) == (4, "server shut down")
