"""Fault suite, backgrounds: a session fetches at most two backgrounds at once; a third bgurl is refused (1005)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from conftest import Deployment
from liveavatar.client import Connection, LiveAvatarApi
from servers import Server
from test_fetch_guards import TinyServer

LOOPBACK = ["127.0.0.1"]


@pytest.fixture(scope="module")
def backend() -> str:
    """Backgrounds do not depend on storage: SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server that may fetch from loopback (the slow image server below)."""
    return Deployment(make_server(env={"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true"}).start())


async def test_a_third_background_while_two_load_is_refused_and_the_two_arrive(deployment: Deployment) -> None:
    image = np.full((64, 64, 3), (40, 160, 90), dtype=np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    async with (
        TinyServer(png, {"content-type": "image/png"}, delay=1.5) as slow,
        LiveAvatarApi(deployment.server.url, api_key=deployment.alice.key) as api,
    ):
        session = await api.create_session("astronaut")
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            url = f"http://127.0.0.1:{slow.port}/bg.png"
            acks = await asyncio.gather(*(conn.set_params(bgurl=f"{url}?{n}") for n in range(3)))
            codes = sorted(ack["pld"]["code"] for ack in acks)
            assert codes == [1000, 1000, 1005], acks
            assert len(slow.requests) == 2  # the refused one was never fetched
            assert (await conn.set_params(bgurl=url))["pld"]["code"] == 1000  # room again once they are in
            detail = await api.session(session["_id"])
            assert detail["status"] == 2
        finally:
            await conn.aclose()
            await api.close_session(session["_id"])
