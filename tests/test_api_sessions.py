"""Session API against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from apiclient import Api
from conftest import Deployment
from servers import Server, create_key

CREATE = "/api/open/v4/liveAvatar/session/create"
LIST = "/api/open/v4/liveAvatar/session/list"


def test_create_returns_queueing_session_with_webrtc_credentials(deployment: Deployment) -> None:
    session = deployment.alice.create_session(duration=60, mode_type=1)
    assert session["status"] == 1
    assert session["type"] == 1
    assert session["stream_type"] == "agora"  # the original's default; liveavatar's own fields are always there
    assert len(session["_id"]) == 24
    creds = session["credentials"]
    assert creds["webrtc_url"].startswith(deployment.server.url + "/")
    assert creds["webrtc_url"].endswith(f"/{session['_id']}/offer")
    assert creds["webrtc_token"].count(".") == 2
    assert creds["ice_servers"] == []
    assert session["duration"] == 60


def test_official_demo_client_blanks_mean_not_given(deployment: Deployment) -> None:
    session = deployment.alice.create_session(
        knowledge_id="", voice_id="", voice_url="", background_url="", language=None, unknown_field=[1, 2]
    )
    assert session["knowledge_id"] == "" and session["voice_id"] == ""
    assert session["status"] == 1


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({}, 1003, "avatar_id"),
        ({"avatar_id": "nobody"}, 1008, "avatar"),
        ({"avatar_id": "astronaut", "voice_id": "no-such-voice"}, 1008, "voice"),
        ({"avatar_id": "astronaut", "knowledge_id": "0" * 24}, 1008, "knowledge"),
        ({"avatar_id": "astronaut", "duration": 3601}, 1003, "duration"),
        ({"avatar_id": "astronaut", "duration": 0}, 1003, "duration"),
        ({"avatar_id": "astronaut", "duration": "60"}, 1003, "duration"),
        ({"avatar_id": "astronaut", "mode_type": 3}, 1003, "mode_type"),
        ({"avatar_id": 7}, 1003, "avatar_id"),
        ({"avatar_id": "astronaut", "voice_params": {"speed": 2}}, 1003, "speed"),
        ({"avatar_id": "astronaut", "voice_params": {"turn_detection": {"threshold": 1.5}}}, 1003, "threshold"),
        ({"avatar_id": "astronaut", "background_url": "file:///etc/passwd"}, 1003, "background_url"),
        ({"avatar_id": "astronaut", "stream_type": "zoom"}, 1003, "stream_type"),
        ({"avatar_id": "astronaut", "language": "xx-nope"}, 1003, "language"),
    ],
)
def test_create_rejects_bad_input(deployment: Deployment, body: dict[str, object], code: int, words: str) -> None:
    reply = deployment.alice.post(CREATE, body)
    assert reply["code"] == code, reply
    assert words in reply["msg"]
    assert reply["data"] is None


def test_detail_close_idempotent(deployment: Deployment) -> None:
    alice = deployment.alice
    session = alice.create_session()
    detail = alice.session(session["_id"])
    assert detail["code"] == 1000 and detail["data"]["_id"] == session["_id"]
    first = alice.close_session(session["_id"])
    assert first["code"] == 1000 and first["data"]["status"] == 3
    assert first["data"]["credentials"] == {}
    assert first["data"]["end_time"] >= first["data"]["create_time"]
    again = alice.post("/api/open/v4/liveAvatar/session/close", {"session_id": session["_id"]})
    assert again["code"] == 1000 and again["data"]["status"] == 3
    assert alice.session(session["_id"])["data"]["close_reason"] == "closed by the client"


def test_unknown_and_foreign_sessions_are_not_found(deployment: Deployment) -> None:
    session = deployment.alice.create_session()
    bob = deployment.bob
    for reply in (
        bob.session(session["_id"]),
        bob.close_session(session["_id"]),
        deployment.alice.session("f" * 24),
        deployment.alice.close_session("f" * 24),
    ):
        assert reply["code"] in (1008, 1009) and reply["data"] is None
    assert deployment.alice.session(session["_id"])["data"]["status"] == 1
    assert all(item["_id"] != session["_id"] for item in bob.get(LIST, size=1000)["data"]["result"])
    assert deployment.alice.post("/api/open/v4/liveAvatar/session/close", {})["code"] == 1003


def test_list_filters_and_paginates(make_server: Callable[..., Server]) -> None:
    server = make_server(args=("--max-sessions", "50")).start()
    api = Api(server.url, key=create_key(server.data_dir, "lister", server.env))
    ids = [api.create_session()["_id"] for _ in range(5)]
    api.close_session(ids[0])
    api.close_session(ids[1])
    everything = api.get(LIST)["data"]
    assert everything["count"] == 5
    assert [s["_id"] for s in everything["result"]] == list(reversed(ids))  # newest first
    page2 = api.get(LIST, page=2, size=2)["data"]
    assert page2["count"] == 5 and [s["_id"] for s in page2["result"]] == [ids[2], ids[1]]
    assert api.get(LIST, page=4, size=2)["data"]["result"] == []
    closed = api.get(LIST, status=3)["data"]
    assert closed["count"] == 2 and {s["_id"] for s in closed["result"]} == set(ids[:2])
    assert api.get(LIST, status=1)["data"]["count"] == 3
    for bad in ({"page": 0}, {"size": 0}, {"status": 5}, {"page": "x"}):
        assert api.get(LIST, **bad)["code"] == 1003


def test_duration_ends_the_session(deployment: Deployment) -> None:
    session = deployment.alice.create_session(duration=1)
    deadline = time.monotonic() + 10
    while deployment.alice.session(session["_id"])["data"]["status"] == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    detail = deployment.alice.session(session["_id"])["data"]
    assert detail["status"] == 3
    assert detail["close_reason"] == "duration elapsed"


def test_capacity_answers_1215_when_full(make_server: Callable[..., Server]) -> None:
    server = make_server(args=("--max-sessions", "2")).start()
    api = Api(server.url, key=create_key(server.data_dir, "cap", server.env))
    first = api.create_session()
    api.create_session()
    full = api.post(CREATE, {"avatar_id": "astronaut"})
    assert full["code"] == 1215 and full["data"] is None
    api.close_session(first["_id"])
    assert api.post(CREATE, {"avatar_id": "astronaut"})["code"] == 1000


def test_restart_keeps_history_and_fails_sessions_left_live(make_server: Callable[..., Server]) -> None:
    server = make_server().start()
    key = create_key(server.data_dir, "restart", server.env)
    api = Api(server.url, key=key)
    closed = api.create_session()
    api.close_session(closed["_id"])
    live = api.create_session(duration=3600)
    kb = api.post("/api/open/v4/knowledge/create", {"name": "kept", "prompt": "be brief"})["data"]
    server.stop(signal.SIGKILL)  # dies without a chance to clean up

    server.start()
    assert api.session(closed["_id"])["data"]["status"] == 3
    revived = api.session(live["_id"])["data"]
    assert revived["status"] == 4 and revived["credentials"] == {}
    assert "restarted" in revived["close_reason"]
    assert api.get("/api/open/v4/knowledge/detail", id=kb["_id"])["data"]["prompt"] == "be brief"
    assert api.get(LIST)["data"]["count"] == 2

    graceful = api.create_session()
    server.stop(signal.SIGTERM)
    server.start()
    assert api.session(graceful["_id"])["data"]["status"] == 4
    assert httpx.get(f"{server.url}/healthz").json()["live_sessions"] == 0
