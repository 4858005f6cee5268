"""Knowledge base storage and validation against a real server."""

from __future__ import annotations

import httpx
import pytest

from conftest import Deployment

BASE = "/api/open/v4/knowledge"
DOC = {"name": "faq.pdf", "url": "https://example.com/faq.pdf", "size": 1024}


def test_crud_round_trip(deployment: Deployment) -> None:
    alice = deployment.alice
    created = alice.post(
        f"{BASE}/create",
        {"name": "Product FAQ", "prologue": "Hi!", "prompt": "Answer briefly.", "docs": [DOC], "urls": []},
    )
    assert created["code"] == 1000
    kb = created["data"]
    assert kb["name"] == "Product FAQ" and kb["docs"][0]["name"] == "faq.pdf" and kb["uid"]
    assert kb["create_time"] == kb["update_time"]
    detail = alice.get(f"{BASE}/detail", id=kb["_id"])["data"]
    # the ingestion runs meanwhile: its progress moves between the two answers, everything else is the same
    assert kb["ingest"]["state"] == "indexing" and detail["ingest"]["state"] in ("indexing", "failed")
    assert {**detail, "ingest": None} == {**kb, "ingest": None}
    updated = alice.post(f"{BASE}/update", {"id": kb["_id"], "prompt": "Answer in detail.", "urls": ["https://a.b/c"]})
    assert updated["code"] == 1000
    assert updated["data"]["prompt"] == "Answer in detail." and updated["data"]["prologue"] == "Hi!"
    assert updated["data"]["urls"] == ["https://a.b/c"] and updated["data"]["update_time"] >= kb["update_time"]
    listed = alice.get(f"{BASE}/list", name="product")
    assert listed["code"] == 1000 and isinstance(listed["data"], list)
    assert [item["_id"] for item in listed["data"]] == [kb["_id"]]
    session = alice.create_session(knowledge_id=kb["_id"])
    assert session["knowledge_id"] == kb["_id"]
    deleted = alice.call("DELETE", f"{BASE}/delete", json={"id": kb["_id"]})
    assert deleted["code"] == 1000 and "data" in deleted
    assert alice.get(f"{BASE}/detail", id=kb["_id"])["code"] == 1008
    assert alice.call("DELETE", f"{BASE}/delete", json={"id": kb["_id"]})["code"] == 1008


def test_names_unique_per_owner(deployment: Deployment) -> None:
    assert deployment.alice.post(f"{BASE}/create", {"name": "Shared name"})["code"] == 1000
    assert deployment.alice.post(f"{BASE}/create", {"name": "Shared name"})["code"] == 1233
    assert deployment.bob.post(f"{BASE}/create", {"name": "Shared name"})["code"] == 1000
    other = deployment.alice.post(f"{BASE}/create", {"name": "Other name"})["data"]
    assert deployment.alice.post(f"{BASE}/update", {"id": other["_id"], "name": "Shared name"})["code"] == 1233


def test_isolation_between_keys(deployment: Deployment) -> None:
    kb = deployment.alice.post(f"{BASE}/create", {"name": "Private", "prompt": "secret"})["data"]
    bob = deployment.bob
    assert bob.get(f"{BASE}/detail", id=kb["_id"])["code"] in (1008, 1009)
    assert bob.post(f"{BASE}/update", {"id": kb["_id"], "prompt": "mine"})["code"] in (1008, 1009)
    assert bob.call("DELETE", f"{BASE}/delete", json={"id": kb["_id"]})["code"] in (1008, 1009)
    assert all(item["_id"] != kb["_id"] for item in bob.get(f"{BASE}/list", size=100)["data"])
    assert (
        bob.post("/api/open/v4/liveAvatar/session/create", {"avatar_id": "astronaut", "knowledge_id": kb["_id"]})[
            "code"
        ]
        == 1008
    )
    assert deployment.alice.get(f"{BASE}/detail", id=kb["_id"])["data"]["prompt"] == "secret"


def test_list_paginates(deployment: Deployment) -> None:
    names = [f"Page test {i}" for i in range(5)]
    for name in names:
        deployment.bob.post(f"{BASE}/create", {"name": name})
    first = deployment.bob.get(f"{BASE}/list", name="page test", page=1, size=2)["data"]
    second = deployment.bob.get(f"{BASE}/list", name="page test", page=2, size=2)["data"]
    assert [kb["name"] for kb in first + second] == list(reversed(names))[:4]
    assert deployment.bob.get(f"{BASE}/list", size=101)["code"] == 1003
    assert deployment.bob.get(f"{BASE}/list", name="%")["data"] == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "prologue": "x" * 2001}, "prologue"),
        ({"name": "ok", "prompt": "x" * 10_001}, "prompt"),
        ({"name": "ok", "docs": [{**DOC, "name": "virus.exe", "url": "https://e.com/virus.exe"}]}, "format"),
        ({"name": "ok", "docs": [{**DOC, "size": 101 * 1024 * 1024}]}, "size"),
        ({"name": "ok", "docs": [{**DOC, "size": 90 * 1024 * 1024}] * 6}, "500 MB"),
        ({"name": "ok", "docs": [{**DOC, "url": "ftp://e.com/a.pdf"}]}, "url"),
        ({"name": "ok", "urls": ["javascript:alert(1)"]}, "urls"),
        ({"name": "ok", "urls": "https://e.com"}, "urls"),
        ({"name": 5}, "name"),
    ],
)
def test_create_validation(deployment: Deployment, body: dict[str, object], words: str) -> None:
    reply = deployment.alice.post(f"{BASE}/create", body)
    assert reply["code"] == 1003, reply
    assert words in reply["msg"]


def test_delete_needs_a_json_body(deployment: Deployment) -> None:
    reply = httpx.request(
        "DELETE", deployment.server.url + f"{BASE}/delete", headers=deployment.alice.headers(), content=b"{"
    ).json()
    assert reply["code"] == 1003
