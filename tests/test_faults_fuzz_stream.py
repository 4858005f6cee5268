"""Fault suite, stream-message fuzz: a Hypothesis state machine drives a real joined session.

It sends chat (in random chunks), commands with generated data, and junk (bytes, non-JSON, wrong shapes,
oversized fields), and checks after every step that the peer connection is up; every command must be
acked (its mid echoed); at the end the session is live (status 2) and its video still flows.
The aiortc peer runs on its own event loop in a thread, since Hypothesis drives the machine synchronously.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conftest import Deployment
from liveavatar.client import Connection
from liveavatar.protocol import encode
from servers import Server

T = TypeVar("T")
LOOPBACK = ["127.0.0.1"]
SESSIONS = "/api/open/v4/liveAvatar/session"


@pytest.fixture(scope="module")
def backend() -> str:
    """Stream messages do not depend on storage: SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    return Deployment(make_server(args=("--max-sessions", "16")).start())


@pytest.fixture(scope="module")
def peer_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread, for the client peers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="peer-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


# What a client may put in a field: the right kind, the wrong kind, empty, huge, invalid Unicode.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "en", "de", "zh", "espeak-de", "\ud800", "http://a:99999/x.png"]),
    st.integers(1_000, 20_000).map(lambda n: "x" * n),  # oversized: beyond every field's limit and Agora's 1 KB
    st.sampled_from(["http://[::1/x.png", "http://a..b/x.png", "http://127.0.0.1:1/x.png", "hand_wave", "angry"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
vparams = st.fixed_dictionaries(
    {},
    optional={
        "vid": values,
        "vurl": values,
        "speed": st.one_of(st.floats(0.5, 1.5), values),
        "stt_language": values,
        "pron_map": st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), values),
        "stt_type": values,
        "turn_detection": st.one_of(
            st.fixed_dictionaries({}, optional={"type": values, "threshold": values, "silence_duration_ms": values}),
            values,
        ),
    },
)
command_data = st.fixed_dictionaries(
    {},
    optional={
        "lang": values,
        "mode": st.one_of(st.sampled_from([1, 2]), values),
        "bgurl": values,
        "vparams": st.one_of(vparams, values),
        "action": st.one_of(st.sampled_from(["nod", "cheer", "moonwalk"]), values),
        "expression": st.one_of(st.sampled_from(["happiness", "sadness", "bored"]), values),
        "vid": values,
    },
)
commands = st.one_of(st.sampled_from(["interrupt", "set-params", "set-action"]), st.text(max_size=12))
junk = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    values.map(json.dumps),
    st.fixed_dictionaries(
        {"v": st.one_of(st.just(2), values), "type": st.one_of(st.sampled_from(["chat", "command", "event"]), values)},
        optional={"mid": values, "idx": values, "fin": values, "pld": values},
    ).map(json.dumps),
    st.integers(1_000, 20_000).map(lambda n: '{"v":2,"type":"chat","mid":"' + "m" * n + '","idx":0,"pld":{}}'),
)


class StreamSession(RuleBasedStateMachine):
    """One joined session per run; rules send what a client could send."""

    url: str = ""
    key: str = ""
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.session = self._api("POST", "/create", {"avatar_id": "astronaut"})
        self.conn: Connection = self._run(Connection.join(self.session["credentials"], ice_hosts=LOOPBACK))
        self._run(asyncio.wait_for(self.conn.video.get(), 15))
        self.acked = 0

    def _run(self, work: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def _api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if method == "GET":
            reply = httpx.get(self.url + SESSIONS + path, params=body, headers={"x-api-key": self.key}, timeout=30)
        else:
            reply = httpx.post(self.url + SESSIONS + path, json=body, headers={"x-api-key": self.key}, timeout=30)
        envelope: dict[str, Any] = reply.json()
        assert envelope["code"] == 1000, envelope
        return dict(envelope["data"])

    def _send(self, raw: str | bytes) -> None:
        self.loop.call_soon_threadsafe(self.conn.channel.send, raw)

    @rule(text=st.text(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=3), order=st.randoms())
    def chat(self, text: str, cuts: list[int], order: Any) -> None:
        mid = secrets.token_hex(6)
        bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [""]
        messages = [
            encode({"v": 2, "type": "chat", "mid": mid, "idx": i, "fin": i == len(pieces) - 1, "pld": {"text": p}})
            for i, p in enumerate(pieces)
        ]
        order.shuffle(messages)  # clients on unordered transports deliver chunks in any order
        for message in messages:
            self._send(message)

    @rule(cmd=commands, data=st.one_of(command_data, values))
    def command(self, cmd: str, data: Any) -> None:
        mid = secrets.token_hex(6)
        pld: dict[str, Any] = {"cmd": cmd} if data is None else {"cmd": cmd, "data": data}
        self._send(json.dumps({"v": 2, "type": "command", "mid": mid, "pld": pld}))

        async def ack() -> dict[str, Any]:
            return await self.conn.next_message(lambda m: m.get("type") == "command" and m.get("mid") == mid, 20)

        reply = self._run(ack())
        assert isinstance(reply["pld"]["code"], int) and isinstance(reply["pld"]["msg"], str), reply
        self.acked += 1

    @rule(
        cmd=st.sampled_from(["set-params", "set-action", "interrupt"]),
        field=st.sampled_from(["cmd", "lang", "vid", "vparams.vid", "vparams.stt_language", "bgurl", "action"]),
        size=st.integers(1_000, 20_000),
    )
    def oversized_command(self, cmd: str, field: str, size: int) -> None:
        big = "z" * size
        data: dict[str, Any] = {}
        if field == "cmd":
            cmd = big
        elif field.startswith("vparams."):
            data["vparams"] = {field.split(".")[1]: big}
        else:
            data[field] = big
        self.command(cmd, data)

    @rule(raw=junk)
    def send_junk(self, raw: str | bytes) -> None:
        self._send(raw)

    @invariant()
    def connected(self) -> None:
        assert self.conn.pc.connectionState == "connected"

    @invariant()
    def video_flows(self) -> None:
        async def fresh_frame() -> None:
            while not self.conn.video.empty():
                self.conn.video.get_nowait()
            await asyncio.wait_for(self.conn.video.get(), 3)

        self._run(fresh_frame())

    def teardown(self) -> None:
        try:
            assert self._run(self.conn.interrupt())["pld"]["code"] == 1000  # still answering, in order

            async def fresh_frames() -> None:
                while not self.conn.video.empty():
                    self.conn.video.get_nowait()
                for _ in range(10):
                    await asyncio.wait_for(self.conn.video.get(), 5)

            self._run(fresh_frames())
            assert self._api("GET", "/detail", {"id": self.session["_id"]})["status"] == 2
        finally:
            self._run(self.conn.aclose())
            self._api("POST", "/close", {"id": self.session["_id"]})


def test_no_stream_message_breaks_a_session(deployment: Deployment, peer_loop: asyncio.AbstractEventLoop) -> None:
    StreamSession.url = deployment.server.url
    StreamSession.key = deployment.alice.key or ""
    StreamSession.loop = peer_loop
    run_state_machine_as_test(
        StreamSession,
        settings=settings(
            max_examples=4,
            stateful_step_count=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
