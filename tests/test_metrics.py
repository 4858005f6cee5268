"""GET /metrics (Prometheus) and GET /healthz, against real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from liveavatar.client import Connection, LiveAvatarApi
from servers import Server, create_key
from test_workers import worker_pids

LOOPBACK = ["127.0.0.1"]


@pytest.fixture(scope="module")
def backend() -> str:
    """Metrics do not depend on storage: SQLite only."""
    return "sqlite"


def scrape(server: Server) -> dict[str, float]:
    """Every sample of /metrics, keyed by name and labels as written."""
    response = httpx.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_sessions_hosts_and_latencies_without_secrets(make_server: Callable[..., Server]) -> None:
    server = make_server().start()
    key = create_key(server.data_dir, "metrics", server.env)
    before = scrape(server)
    assert before["liveavatar_sessions_live"] == 0
    assert before['liveavatar_hosts{state="up"}'] == 1
    assert before['liveavatar_sessions_total{status="created"}'] == 0
    async with LiveAvatarApi(server.url, api_key=key) as api:
        session = await api.create_session("astronaut")
        assert scrape(server)["liveavatar_sessions_live"] == 1
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            await asyncio.wait_for(conn.video.get(), 10)
            conn.send_chat("A secret sentence nobody may scrape.")
            await conn.bot_reply(timeout=30)
            during = scrape(server)
        finally:
            await conn.aclose()
        await api.close_session(session["_id"])
    after = scrape(server)
    assert during['liveavatar_sessions_total{status="joined"}'] == 1
    assert during["liveavatar_join_seconds_count"] == 1 and during["liveavatar_session_open_seconds_count"] == 1
    for stage in ("reply_to_first_sound", "tts_first_chunk"):  # timed in the host, carried across the seam
        assert during[f'liveavatar_turn_stage_seconds_count{{stage="{stage}"}}'] >= 1
        assert 0 < during[f'liveavatar_turn_stage_seconds_sum{{stage="{stage}"}}'] < 30
    hosts = [name for name in during if name.startswith("liveavatar_host_sessions{")]
    assert len(hosts) == 1 and during[hosts[0]] == 1
    assert during[hosts[0].replace("host_sessions", "host_cpu_seconds")] > 0
    assert during[hosts[0].replace("host_sessions", "host_resident_bytes")] > 50e6
    assert after["liveavatar_sessions_live"] == 0
    assert after['liveavatar_sessions_total{status="closed"}'] == 1
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        text = (await http.get("/metrics")).text + (await http.get("/healthz")).text
    for secret in (key, key[:12], "secret sentence", session["_id"], session["credentials"]["webrtc_token"]):
        assert secret not in text
    assert '"uid"' not in text and "owner" not in text


def test_healthz_is_503_while_no_session_host_is_up(make_server: Callable[..., Server]) -> None:
    server = make_server(args=("--workers", "1")).start(timeout=180)
    health = httpx.get(f"{server.url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["hosts"] == 1
    (worker,) = worker_pids(server)
    os.kill(worker, signal.SIGKILL)
    codes = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/healthz", timeout=5)
        codes.append(response.status_code)
        if response.status_code == 503:
            assert response.json()["hosts"] == 0
        if 503 in codes and response.status_code == 200:
            break
        time.sleep(0.05)
    assert 503 in codes and codes[-1] == 200, codes  # down while the worker was replaced, then up again
    assert scrape(server)["liveavatar_host_deaths_total"] == 1
