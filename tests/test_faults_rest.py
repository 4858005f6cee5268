"""Fault suite, REST edge: invalid Unicode, malformed URLs, trailing slashes, per-key quota, what objects reveal.

A real server on loopback (SQLite). Each test fails on a server that stores what it cannot answer with,
starts a session it will fail, answers a redirect with no envelope, lets one key take every slot, or
shows server paths and sequential key ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from apiclient import Api
from conftest import Deployment
from servers import Server, create_key

SESSIONS = "/api/open/v4/liveAvatar/session"
KNOWLEDGE = "/api/open/v4/knowledge"
BAD_URLS = [
    "http://a:99999/x.png",
    "http://[::1/x.png",
    f"http://{'a' * 64}.example/x.png",
    "http://a..b/x.png",
    "http://x:abc/x.png",
]


@pytest.fixture(scope="module")
def backend() -> str:
    """The edge does not depend on storage: SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server with a per-key quota of 3 live sessions."""
    server = make_server(env={"LIVEAVATAR_MAX_SESSIONS_PER_KEY": "3"}, args=("--max-sessions", "64"))
    return Deployment(server.start())


def session_count(api: Api) -> int:
    listed = api.get(f"{SESSIONS}/list")
    assert listed["code"] == 1000, listed
    return int(listed["data"]["count"])


def post_json(api: Api, path: str, body: Any) -> dict[str, Any]:
    """POST `body` as a client in another language would: lone surrogates as JSON escapes."""
    response = httpx.post(
        api.base + path,
        content=json.dumps(body).encode("ascii"),
        headers={**api.headers(), "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


# --- finding 1: lone surrogates are refused at the edge, and nothing is stored ----------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"avatar_id": "astronaut", "voice_params": {"pron_map": {"hello": "\ud800"}}},
        {"avatar_id": "astronaut", "voice_params": {"pron_map": {"\udfff": "x"}}},
        {"avatar_id": "astronaut", "language": "e\ud800"},
        {"avatar_id": "astronaut", "unknown_field": "\ud800"},  # ignored fields are still not text
    ],
)
def test_lone_surrogates_in_a_create_body_are_refused_and_nothing_is_stored(
    deployment: Deployment, body: dict[str, object]
) -> None:
    alice = deployment.alice
    before = session_count(alice)
    reply = post_json(alice, f"{SESSIONS}/create", body)
    assert reply["code"] == 1003 and "Unicode" in reply["msg"], reply
    assert session_count(alice) == before  # and session/list still answers


def test_lone_surrogates_in_a_knowledge_doc_are_refused_and_the_list_still_answers(deployment: Deployment) -> None:
    alice = deployment.alice
    doc = {"name": "faq.txt", "url": "https://example.com/faq.txt", "note": "\ud800"}
    reply = post_json(alice, f"{KNOWLEDGE}/create", {"name": "surrogates", "docs": [doc]})
    assert reply["code"] == 1003 and "Unicode" in reply["msg"], reply
    reply = post_json(alice, f"{KNOWLEDGE}/create", {"name": "bad \udc00 name"})
    assert reply["code"] == 1003
    assert alice.get(f"{KNOWLEDGE}/list", size=100)["code"] == 1000


@pytest.mark.parametrize(
    "path",
    [
        f"{SESSIONS}/detail?id=%ED%A0%80",  # a UTF-8-encoded surrogate
        f"{SESSIONS}/list?status=%FF",
        f"{KNOWLEDGE}/list?name=caf%E9",  # Latin-1, not UTF-8
    ],
)
def test_invalid_utf8_in_a_query_string_is_refused(deployment: Deployment, path: str) -> None:
    reply = deployment.alice.call("GET", path)
    assert reply["code"] == 1003 and "UTF-8" in reply["msg"], reply


# --- finding 4: a malformed background_url is refused at create with a reason ------------------------------


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_background_url_is_refused_at_create(deployment: Deployment, url: str) -> None:
    alice = deployment.alice
    before = session_count(alice)
    reply = alice.post(f"{SESSIONS}/create", {"avatar_id": "astronaut", "background_url": url})
    assert reply["code"] == 1003 and "background_url" in reply["msg"] and "URL" in reply["msg"], reply
    assert session_count(alice) == before


# --- finding 11: trailing slash, per-key quota, no server paths, opaque uids -------------------------------


def test_a_trailing_slash_answers_the_envelope(deployment: Deployment) -> None:
    alice = deployment.alice
    response = httpx.get(deployment.server.url + f"{SESSIONS}/list/", headers=alice.headers(), timeout=10)
    assert response.status_code == 200 and response.json()["code"] == 1000
    response = httpx.post(
        deployment.server.url + f"{SESSIONS}/close/", json={"id": "nope"}, headers=alice.headers(), timeout=10
    )
    assert response.status_code == 200 and response.json()["code"] == 1008  # the route ran, with the body


def test_one_key_cannot_hold_more_than_its_quota(deployment: Deployment) -> None:
    dave = Api(deployment.server.url, key=create_key(deployment.server.data_dir, "dave", deployment.server.env))
    ids = [dave.create_session()["_id"] for _ in range(3)]
    refused = dave.post(f"{SESSIONS}/create", {"avatar_id": "astronaut"})
    assert refused["code"] == 1006 and "3" in refused["msg"], refused
    assert deployment.bob.create_session()["status"] == 1  # another key is not affected
    dave.close_session(ids[0])
    assert dave.create_session()["status"] == 1


def test_knowledge_detail_shows_no_server_paths(deployment: Deployment) -> None:
    alice = deployment.alice
    kb = alice.post(f"{KNOWLEDGE}/create", {"name": "uploads"})["data"]
    response = httpx.post(
        deployment.server.url + f"{KNOWLEDGE}/upload",
        data={"id": kb["_id"]},
        files={"file": ("notes.txt", b"The office opens at nine.", "text/plain")},
        headers=alice.headers(),
        timeout=30,
    )
    assert response.json()["code"] == 1000
    deadline = time.monotonic() + 60
    while True:
        detail = alice.get(f"{KNOWLEDGE}/detail", id=kb["_id"])["data"]
        if detail["ingest"]["state"] != "indexing" and detail["ingest"]["documents"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    text = str(detail)
    assert str(deployment.server.data_dir) not in text and "/uploads/" not in text, detail
    assert detail["ingest"]["documents"][0]["source"] == "upload:notes.txt"


def test_uid_is_an_opaque_per_owner_number(deployment: Deployment) -> None:
    alice, bob = deployment.alice, deployment.bob
    a1, a2, b1 = alice.create_session(), alice.create_session(), bob.create_session()
    assert isinstance(a1["uid"], int) and a1["uid"] == a2["uid"] != b1["uid"]
    assert a1["uid"] > 1_000_000 and b1["uid"] > 1_000_000  # not the keys' sequential ids (1, 2, ...)
    kb = alice.post(f"{KNOWLEDGE}/create", {"name": "uid check"})["data"]
    assert kb["uid"] == a1["uid"]
    for session in (a1, a2, b1):
        (bob if session is b1 else alice).close_session(session["_id"])
