"""Fault suite, stream messages: whatever a client sends on the data channel gets an answer, never a dead session.

Real server on loopback, real aiortc peers. Each test fails on a server that lets one message break the
connection (an oversized ack raised into aiortc's loop), stores an unusable setting, or fails the session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from conftest import Deployment
from liveavatar.client import Connection, LiveAvatarApi
from servers import Server
from test_faults_rest import BAD_URLS

LOOPBACK = ["127.0.0.1"]
BIG = "x" * 20_000


@pytest.fixture(scope="module")
def backend() -> str:
    """Stream messages do not depend on storage: SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server with room for every session this module opens."""
    return Deployment(make_server(args=("--max-sessions", "64")).start())


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[LiveAvatarApi]:
    """A REST client with alice's key."""
    async with LiveAvatarApi(deployment.server.url, api_key=deployment.alice.key) as client:
        yield client


async def joined(api: LiveAvatarApi, profile: str = "webrtc", **params: Any) -> tuple[str, Connection]:
    """A new session and a connection to it, with the first video frame in."""
    session = await api.create_session("astronaut", transport_profile=profile, **params)
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, profile=profile)
    await asyncio.wait_for(conn.video.get(), 15)
    return session["_id"], conn


def is_command(message: dict[str, Any]) -> bool:
    return message.get("type") == "command"


async def assert_alive(api: LiveAvatarApi, session_id: str, conn: Connection) -> None:
    """The session is live, answers a command, and its video keeps coming."""
    assert (await conn.set_action("nod"))["pld"]["code"] == 1000
    while not conn.video.empty():
        conn.video.get_nowait()
    for _ in range(10):
        await asyncio.wait_for(conn.video.get(), 5)
    assert conn.pc.connectionState == "connected"
    assert (await api.session(session_id))["status"] == 2


def command(mid: str, cmd: str, data: dict[str, Any] | None = None) -> str:
    pld: dict[str, Any] = {"cmd": cmd}
    if data is not None:
        pld["data"] = data
    return json.dumps({"v": 2, "type": "command", "mid": mid, "pld": pld})


# --- finding 2: one oversized field must not tear down the connection ----------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (command("m1", BIG), "cmd"),
        (command(BIG, "set-params", {"lang": "en"}), "mid"),
        (command("m1", "set-params", {"lang": BIG}), "data.lang"),
        (command("m1", "set-params", {"vparams": {"vid": BIG}}), "data.vparams.vid"),
    ],
)
async def test_a_20_kb_field_gets_an_error_and_the_connection_lives(api: LiveAvatarApi, raw: str, field: str) -> None:
    session_id, conn = await joined(api)
    try:
        conn.send_raw(raw)
        reply = await conn.next_message(is_command)
        assert reply["pld"]["code"] == 1003, reply
        assert field.split(".")[-1] in reply["pld"]["msg"]
        assert len(json.dumps(reply)) < 1024  # nothing of the 20 KB is echoed
        await assert_alive(api, session_id, conn)
    finally:
        await conn.aclose()


async def test_a_long_mid_on_the_agora_profile_gets_an_error_and_the_connection_lives(api: LiveAvatarApi) -> None:
    session_id, conn = await joined(api, "agora")
    try:
        conn.send_raw(command("m" * 1100, "set-action", {"action": "nod"}))
        reply = await conn.next_message(is_command)
        assert reply["pld"]["code"] == 1003 and "mid" in reply["pld"]["msg"]
        await assert_alive(api, session_id, conn)
    finally:
        await conn.aclose()


# --- finding 3: a pron_map the TTS cannot use is refused at set-params ---------------------------------


@pytest.mark.parametrize(
    "pron_map",
    [
        {"hello": "\ud800"},  # json.dumps writes the lone surrogate as the escape a client would send
        {"\udfff": "hi"},
        {"hello": "x" * 5000},
        {" ": "blank"},
        {f"w{n}": "x" for n in range(501)},
    ],
)
async def test_a_bad_pron_map_is_refused_at_set_params(api: LiveAvatarApi, pron_map: dict[str, str]) -> None:
    session_id, conn = await joined(api)
    try:
        ack = await conn.set_params(vparams={"pron_map": pron_map})
        assert ack["pld"]["code"] == 1003 and "pron_map" in ack["pld"]["msg"], ack
        conn.send_chat("hello")
        assert await conn.bot_reply() == "hello"
        await assert_alive(api, session_id, conn)
    finally:
        await conn.aclose()


# --- finding 4: a malformed bgurl is refused with a reason, the session lives --------------------------


@pytest.mark.parametrize("url", BAD_URLS)
async def test_a_malformed_bgurl_is_refused_with_a_reason(api: LiveAvatarApi, url: str) -> None:
    session_id, conn = await joined(api)
    try:
        ack = await conn.set_params(bgurl=url)
        assert ack["pld"]["code"] == 1003 and "bgurl" in ack["pld"]["msg"], ack
        await asyncio.sleep(0.5)
        await assert_alive(api, session_id, conn)
    finally:
        await conn.aclose()


# --- finding 1 (stream edge): invalid Unicode outside chat text is refused ------------------------------


async def test_lone_surrogates_in_command_fields_are_refused(api: LiveAvatarApi) -> None:
    session_id, conn = await joined(api)
    try:
        conn.send_raw(command("m1", "set-params", {"lang": "e\ud800"}))
        reply = await conn.next_message(is_command)
        assert reply["pld"]["code"] == 1003 and "Unicode" in reply["pld"]["msg"]
        conn.send_raw(command("m\udc00", "interrupt"))
        reply = await conn.next_message(is_command)
        assert reply["pld"]["code"] == 1003 and "mid" not in reply  # an invalid mid is not echoed
        await assert_alive(api, session_id, conn)
    finally:
        await conn.aclose()
