"""Dialogue mode end to end: LLM answers (local SmolLM2 and a real OpenAI-compatible server), knowledge bases."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conftest import LOOPBACK, Deployment, hear, wait_until
from liveavatar.client import Connection, LiveAvatarApi
from liveavatar.llm import packaged_smollm2_path
from servers import Server, free_port, serve_folder

BACKENDS = ("sqlite",)  # storage is covered elsewhere
SERVER_ARGS = ("--max-sessions", "16")
SERVER_ENV = {  # the test's document server lives on loopback
    "LIVEAVATAR_ALLOW_PRIVATE_URLS": "true",
    "LIVEAVATAR_KNOWLEDGE_EMBEDDINGS": "false",
}
KB = "/api/open/v4/knowledge"


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback web server with a few documents in several formats, each with a fact found nowhere else."""
    import docx

    root = tmp_path_factory.mktemp("docs")
    (root / "warranty.txt").write_text(
        "Product notes.\n\nThe Zorblax blender warranty lasts 17 months from purchase.\n"
    )
    (root / "shipping.md").write_text("# Shipping\n\nOrders to Norway are delivered by the Fjordline courier.\n")
    (root / "stores.csv").write_text("city,opening hour\nQuillport,the Quillport store opens at 7 am\n")
    (root / "faq.json").write_text('{"faq": [{"q": "mascot", "a": "The company mascot is a purple otter named Bix."}]}')
    document = docx.Document()
    document.add_paragraph("The headquarters cafeteria serves lemon soup every Thursday.")
    document.save(str(root / "cafeteria.docx"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf \x00\xff" * 50)

    with serve_folder(root) as url:
        yield url


def bot_chunks(conn: Connection) -> Callable[[dict[str, Any]], bool]:
    """Matches the bot's chat chunks."""
    return lambda m: m.get("type") == "chat" and m.get("pld", {}).get("from") == "bot"


async def collect_reply(conn: Connection, timeout: float = 60) -> tuple[str, int, list[str]]:
    """Read until audio_end: the bot text, how many chunks it came in, and the events seen."""
    parts: list[str] = []
    events: list[str] = []
    while True:
        message = await conn.next_message(lambda m: m.get("type") in ("chat", "event"), timeout=timeout)
        if message["type"] == "chat" and message["pld"].get("from") == "bot":
            parts.append(message["pld"]["text"])
        elif message["type"] == "event":
            events.append(message["pld"]["event"])
            if message["pld"]["event"] == "audio_end":
                return "".join(parts), len(parts), events


async def wait_ready(deployment: Deployment, kb_id: str) -> dict[str, Any]:
    """Poll the knowledge base's detail until ingestion has finished."""

    async def finished() -> dict[str, Any] | None:
        detail = (await asyncio.to_thread(deployment.alice.get, f"{KB}/detail", id=kb_id))["data"]
        return dict(detail) if detail["ingest"]["state"] in ("ready", "failed") else None

    result: dict[str, Any] = await wait_until(finished, timeout=60, interval=0.2, what=f"ingestion of {kb_id}")
    return result


async def test_local_llm_answers_spoken_and_streamed(api: LiveAvatarApi) -> None:
    session = await api.create_session("grace_hopper", mode_type=2)
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        conn.send_chat("Hello! What is the capital of France?")
        text, chunks, events = await collect_reply(conn)
        assert text.strip() and chunks >= 3  # streamed in pieces as it was generated
        assert events[0] == "audio_start" and events[-1] == "audio_end"
        transcript = await api.transcript(session["_id"])
        assert transcript["messages"][-1]["from"] == "bot" and transcript["messages"][-1]["text"]
    finally:
        await conn.aclose()


async def test_knowledge_base_grounds_the_answer(api: LiveAvatarApi, deployment: Deployment, documents: str) -> None:
    docs = [
        {"name": name, "url": f"{documents}/{name}", "size": 0}
        for name in ("warranty.txt", "shipping.md", "stores.csv", "faq.json", "cafeteria.docx", "broken.pdf")
    ]
    created = await asyncio.to_thread(
        deployment.alice.post,
        f"{KB}/create",
        {
            "name": "Zorblax support",
            "prompt": "You are Zorblax's support agent.",
            "prologue": "Hi, ask me anything.",
            "docs": docs,
        },
    )
    assert created["code"] == 1000, created
    kb = await wait_ready(deployment, created["data"]["_id"])
    states = {d["name"]: d["state"] for d in kb["ingest"]["documents"]}
    assert states.pop("broken.pdf") == "failed"  # a corrupt document is reported, never fatal
    assert set(states.values()) == {"ready"}, kb["ingest"]

    session = await api.create_session("astronaut", mode_type=2, knowledge_id=kb["_id"])
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        prologue, _, _ = await collect_reply(conn)
        assert prologue == "Hi, ask me anything."
        conn.send_chat("How long does the Zorblax blender warranty last?")
        text, _, _ = await collect_reply(conn)
        transcript = await api.transcript(session["_id"])
        assert "17 months" in transcript["passages"][0]
        print(f"answer: {text!r}")
        assert "17" in text
        conn.send_chat("Which courier delivers orders to Norway?")
        await collect_reply(conn)
        transcript = await api.transcript(session["_id"])
        assert "Fjordline" in transcript["passages"][0]
    finally:
        await conn.aclose()


async def test_upload_and_private_urls(make_server: Callable[..., Server], documents: str) -> None:
    server = make_server(env={"LIVEAVATAR_KNOWLEDGE_EMBEDDINGS": "false"}).start()  # private URLs NOT allowed
    deployment = Deployment(server)
    url = f"{documents}/warranty.txt"
    created = await asyncio.to_thread(
        deployment.alice.post, f"{KB}/create", {"name": "Guarded", "docs": [{"name": "w.txt", "url": url}]}
    )
    kb = await wait_ready(deployment, created["data"]["_id"])
    [doc] = kb["ingest"]["documents"]
    assert doc["state"] == "failed" and "private" in doc["reason"]
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"{server.url}{KB}/upload",
            headers={"x-api-key": deployment.alice.key or ""},
            data={"id": kb["_id"]},
            files={"file": ("menu.txt", io.BytesIO(b"The canteen serves saffron rice on Mondays."), "text/plain")},
        )
        assert reply.json()["code"] == 1000, reply.text
        bad = await http.post(
            f"{server.url}{KB}/upload",
            headers={"x-api-key": deployment.bob.key or ""},
            data={"id": kb["_id"]},
            files={"file": ("x.txt", io.BytesIO(b"hi"), "text/plain")},
        )
        assert bad.json()["code"] == 1008  # another key's base
    kb = await wait_ready(deployment, kb["_id"])  # the upload's answer already shows the base indexing again
    uploaded = [d for d in kb["ingest"]["documents"] if d["name"] == "menu.txt"]
    assert uploaded and uploaded[0]["state"] == "ready"


async def test_mode_switch_interrupt_and_llm_failure(make_server: Callable[..., Server]) -> None:
    dead = free_port()  # nothing listens here: every LLM call fails
    env = {
        "LIVEAVATAR_LLM_BACKEND": "openai",
        "LIVEAVATAR_LLM_BASE_URL": f"http://127.0.0.1:{dead}/v1",
        "LIVEAVATAR_LLM_MODEL": "none",
        "LIVEAVATAR_LLM_RETRIES": "1",
    }
    server = make_server(env=env).start()
    deployment = Deployment(server)
    async with LiveAvatarApi(server.url, api_key=deployment.alice.key) as api:
        session = await api.create_session("astronaut", mode_type=1)
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            conn.send_chat("Retelling first.")
            assert (await collect_reply(conn))[0] == "Retelling first."
            assert (await conn.set_params(mode=2))["pld"]["code"] == 1000
            conn.send_chat("Now answer through the model, please.")
            error = await conn.next_message(lambda m: m.get("pld", {}).get("event") == "error", timeout=30)
            assert error["pld"]["code"] == 1218 and "language model" in error["pld"]["msg"]
            text, _, events = await collect_reply(conn)
            assert text.startswith("Sorry") and events[-1] == "audio_end"  # the spoken fallback
        finally:
            await conn.aclose()


@pytest.fixture(scope="module")
def openai_server() -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server on loopback, with the packaged SmolLM2."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(packaged_smollm2_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_openai_compatible_server_and_interrupt(make_server: Callable[..., Server], openai_server: str) -> None:
    env = {
        "LIVEAVATAR_LLM_BACKEND": "openai",
        "LIVEAVATAR_LLM_BASE_URL": openai_server,
        "LIVEAVATAR_LLM_MODEL": "smollm2",
        "LIVEAVATAR_LLM_MAX_TOKENS": "300",
    }
    server = make_server(env=env).start()
    deployment = Deployment(server)
    async with LiveAvatarApi(server.url, api_key=deployment.alice.key) as api:
        session = await api.create_session("astronaut", mode_type=2)
        conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
        try:
            conn.send_chat("What is a rainbow?")
            text, chunks, _ = await collect_reply(conn)
            assert text.strip() and chunks >= 2
            conn.send_chat("Tell me a long story about a dragon who learns to bake bread, with many details.")
            await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_start", timeout=60)
            await hear(conn, 1.0, timeout=60)
            assert (await conn.interrupt())["pld"]["code"] == 1000
            await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_end", timeout=10)
            transcript = await api.transcript(session["_id"])
            story = transcript["messages"][-1]
            assert story["from"] == "bot" and story["interrupted"] is True
            assert 0 < len(story["text"].split()) < 40  # only what was heard before the cut
        finally:
            await conn.aclose()
