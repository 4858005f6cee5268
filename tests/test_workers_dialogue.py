"""Dialogue mode in a worker process: the LLM and the knowledge base are served by the API process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from conftest import Deployment
from liveavatar.client import Connection, LiveAvatarApi
from servers import Server, serve_folder

LOOPBACK = ["127.0.0.1"]
KB = "/api/open/v4/knowledge"


@pytest.fixture(scope="module")
def backend() -> str:
    """SQLite only: storage is covered elsewhere."""
    return "sqlite"


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback web server with one document holding a fact found nowhere else."""
    root = tmp_path_factory.mktemp("docs")
    (root / "warranty.txt").write_text("Product notes.\n\nThe Zorblax blender warranty lasts 17 months.\n")

    with serve_folder(root) as url:
        yield url


async def reply_of(conn: Connection, timeout: float = 90) -> tuple[str, int]:
    """The bot's text until audio_end, and how many chunks it came in."""
    parts: list[str] = []
    while True:
        message = await conn.next_message(lambda m: m.get("type") in ("chat", "event"), timeout=timeout)
        if message["type"] == "chat" and message["pld"].get("from") == "bot":
            parts.append(message["pld"]["text"])
        elif message["type"] == "event" and message["pld"]["event"] == "audio_end":
            return "".join(parts), len(parts)


async def test_dialogue_session_in_a_worker_answers_from_the_knowledge_base(
    make_server: Callable[..., Server], documents: str
) -> None:
    env = {"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true", "LIVEAVATAR_KNOWLEDGE_EMBEDDINGS": "false"}
    deployment = Deployment(make_server(env=env, args=("--workers", "1")).start(timeout=180))
    body = {
        "name": "Zorblax",
        "prologue": "Hi, ask me.",
        "docs": [{"name": "w.txt", "url": f"{documents}/warranty.txt"}],
    }
    kb = (await asyncio.to_thread(deployment.alice.post, f"{KB}/create", body))["data"]
    for _ in range(300):
        detail = (await asyncio.to_thread(deployment.alice.get, f"{KB}/detail", id=kb["_id"]))["data"]
        if detail["ingest"]["state"] == "ready":
            break
        await asyncio.sleep(0.2)
    async with LiveAvatarApi(deployment.server.url, api_key=deployment.alice.key) as api:
        session = await api.create_session("astronaut", mode_type=2, knowledge_id=kb["_id"])
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            assert (await reply_of(conn))[0] == "Hi, ask me."  # the prologue, read from the database by the API
            conn.send_chat("How long does the Zorblax blender warranty last?")
            text, chunks = await reply_of(conn)
            assert text.strip() and chunks >= 2  # streamed from the API process's LLM as it was generated
            transcript = await api._get("/api/open/v4/liveAvatar/session/transcript", id=session["_id"])
            assert transcript["live"] is True
            assert "17 months" in transcript["passages"][0]  # retrieved by the API process
            assert transcript["messages"][-1] == {"from": "bot", "text": text, "interrupted": False}
            async with httpx.AsyncClient(timeout=5) as http:
                metrics = (await http.get(f"{deployment.server.url}/metrics")).text
            assert "liveavatar_llm_first_token_seconds_count 1.0" in metrics  # timed where the LLM runs
            assert "liveavatar_retrieval_seconds_count 1.0" in metrics
        finally:
            await conn.aclose()
