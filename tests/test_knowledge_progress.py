"""Ingestion progress through the API of a real server: it moves while a base is indexed, and survives kill -9."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from apiclient import Api
from servers import Server, create_key, web_server

BASE = "/api/open/v4/knowledge"
ENV = {"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true", "LIVEAVATAR_KNOWLEDGE_EMBEDDINGS": "false"}
SLOW_DOCUMENT_SECONDS = 0.5
"""How long the site takes to serve each `/slow/` document: long enough for several polls per document."""
GATE = threading.Event()
"""`/gated/` documents are served once this is set."""


def _text(name: str) -> bytes:
    """About 40 KB of distinct sentences that name the document (so each one is its own passages)."""
    return " ".join(
        f"Passage {i} of {name} says that lamp model {i} ships in {i % 12 + 1} days." for i in range(600)
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            if self.path.startswith("/slow/"):
                time.sleep(SLOW_DOCUMENT_SECONDS)
            elif self.path.startswith("/gated/"):
                GATE.wait(60)
            elif not self.path.startswith("/fast/"):
                self.send_error(404)
                return
            body = _text(self.path.rsplit("/", 1)[-1])
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server that asked was killed

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving documents slowly, quickly, or once the gate opens."""
    with web_server(_Handler) as url:
        try:
            yield url
        finally:
            GATE.set()  # release a handler still waiting


def _ingest(api: Api, kb_id: str) -> dict[str, Any]:
    reply = api.get(f"{BASE}/detail", id=kb_id)
    assert reply["code"] == 1000, reply
    ingest: dict[str, Any] = reply["data"]["ingest"]
    return ingest


def _wait(api: Api, kb_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ingest = _ingest(api, kb_id)
        if done(ingest):
            return ingest
        assert time.monotonic() < deadline, ingest
        time.sleep(0.05)


def _documents(ingest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {document["name"]: document for document in ingest["documents"]}


def test_detail_shows_indexing_with_progress_that_moves(make_server: Callable[..., Server], site: str) -> None:
    server = make_server(env=ENV).start()
    api = Api(server.url, key=create_key(server.data_dir, "progress", server.env))
    docs = [{"name": f"part{i}.txt", "url": f"{site}/slow/part{i}.txt"} for i in range(8)]
    created = api.post(f"{BASE}/create", {"name": "Large base", "docs": docs})
    assert created["code"] == 1000, created
    kb_id = created["data"]["_id"]
    assert created["data"]["ingest"]["state"] == "indexing"  # from the answer on, not "pending" until the end

    progress: list[float] = []
    states: set[str] = set()
    deadline = time.monotonic() + 90
    while (ingest := _ingest(api, kb_id))["state"] == "indexing":
        progress.append(ingest["progress"])
        states |= {document["state"] for document in ingest["documents"]}
        assert time.monotonic() < deadline, ingest
        time.sleep(0.05)
    assert ingest["state"] == "ready" and ingest["progress"] == 1.0, ingest
    assert all(document["state"] == "ready" for document in ingest["documents"]), ingest
    assert progress == sorted(progress), progress  # never goes back
    # eight documents of 0.5 s each: the polls see it move through several distinct values below 1
    distinct = sorted(set(progress))
    assert len(distinct) >= 4 and distinct[-1] < 1.0, distinct
    assert {"pending", "fetching"} <= states, states

    # an update shows `indexing` at once (not the old `ready` until the new run ends), then ready again
    docs.append({"name": "extra.txt", "url": f"{site}/slow/extra.txt"})
    updated = api.post(f"{BASE}/update", {"id": kb_id, "docs": docs})
    assert updated["code"] == 1000 and updated["data"]["ingest"]["state"] == "indexing", updated
    assert updated["data"]["ingest"]["progress"] < 1.0
    final = _wait(api, kb_id, lambda ingest: ingest["state"] != "indexing")
    assert final["state"] == "ready" and _documents(final)["extra.txt"]["state"] == "ready", final
    assert final["chunks"] > ingest["chunks"]


def test_an_update_interrupted_by_kill_9_is_resumed_on_start(make_server: Callable[..., Server], site: str) -> None:
    GATE.clear()
    server = make_server(env=ENV).start()
    api = Api(server.url, key=create_key(server.data_dir, "resume", server.env))
    first = [{"name": "first.txt", "url": f"{site}/fast/first.txt"}]
    kb_id = api.post(f"{BASE}/create", {"name": "Resumed base", "docs": first})["data"]["_id"]
    before = _wait(api, kb_id, lambda ingest: ingest["state"] == "ready")

    docs = [*first, {"name": "second.txt", "url": f"{site}/gated/second.txt"}]
    assert api.post(f"{BASE}/update", {"id": kb_id, "docs": docs})["data"]["ingest"]["state"] == "indexing"
    # the server dies while it fetches the new document
    _wait(api, kb_id, lambda ingest: _documents(ingest).get("second.txt", {}).get("state") == "fetching")
    assert server.stop(signal.SIGKILL) == -9
    GATE.set()

    server.start()
    after = _wait(api, kb_id, lambda ingest: ingest["state"] != "indexing" and "second.txt" in _documents(ingest))
    assert after["state"] == "ready", after
    second = _documents(after)["second.txt"]
    assert second["state"] == "ready" and second["chunks"] > 0, after
    assert after["chunks"] == before["chunks"] + second["chunks"]
    assert "resuming its ingestion" in server.log()
