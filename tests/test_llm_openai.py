"""The OpenAI-compatible backend against real servers on loopback: llama.cpp's server, and a failing fake."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from liveavatar.llm import ChatMessage, LLMError, LLMSettings, OpenAILLM, WithRetries, WithTimeout, build_llm
from liveavatar.llm.openai import data_url, delta_content, request_messages
from servers import free_port

QUESTION = [
    ChatMessage("system", "You are a helpful assistant. Answer in one or two short sentences."),
    ChatMessage("user", "What is the capital of France?"),
]


# --- the fake: scripted failures --------------------------------------------------------------------


@dataclass
class Fake:
    """A Starlette app whose path picks the behaviour; it records every request body."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""


def _sse(*deltas: str, done: bool = True) -> list[bytes]:
    events = [f"data: {json.dumps({'choices': [{'delta': {'content': d}}]})}\n\n".encode() for d in deltas]
    return events + ([b"data: [DONE]\n\n"] if done else [])


def _fake_app(fake: Fake) -> Starlette:
    async def completions(request: Request) -> Response:
        mode = request.path_params["mode"]
        fake.hits[mode] = fake.hits.get(mode, 0) + 1
        fake.bodies.append(await request.json())
        hit = fake.hits[mode]
        if mode == "ok":
            return StreamingResponse(iter(_sse("Hello", " there", "!")), media_type="text/event-stream")
        if mode == "fail":
            return JSONResponse({"error": "boom"}, status_code=500)
        if mode == "refuse":
            return JSONResponse({"error": "bad key"}, status_code=401)
        if mode == "flaky" and hit == 1:
            return JSONResponse({"error": "warming up"}, status_code=503)
        if mode == "flaky":
            return StreamingResponse(iter(_sse("Second", " try")), media_type="text/event-stream")
        if mode == "hang":
            await fake.release.wait()
            return JSONResponse({"error": "too late"}, status_code=500)
        if mode == "stall":  # one token, then nothing
            return StreamingResponse(_stall(fake), media_type="text/event-stream")
        if mode == "error-event":
            body = iter([b": keep-alive\n\n", b'data: {"error": {"message": "model crashed"}}\n\n'])
            return StreamingResponse(body, media_type="text/event-stream")
        if mode == "whole":
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": "All at once."}}]})
        if mode == "endless":
            return StreamingResponse(_endless(fake), media_type="text/event-stream")
        return JSONResponse({"error": "unknown mode"}, status_code=404)

    return Starlette(routes=[Route("/{mode}/v1/chat/completions", completions, methods=["POST"])])


async def _stall(fake: Fake) -> AsyncIterator[bytes]:
    yield _sse("Partial", done=False)[0]
    await fake.release.wait()


async def _endless(fake: Fake) -> AsyncIterator[bytes]:
    try:
        while True:
            yield _sse("la ", done=False)[0]
            await asyncio.sleep(0.01)
    finally:
        fake.stream_closed.set()


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[Fake]:
    state = Fake()
    # A socket already listening: requests wait in its backlog until uvicorn accepts, so no start-up race.
    sock = socket.create_server(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(_fake_app(state), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield state
    finally:
        state.release.set()
        server.should_exit = True
        await task
        sock.close()


def _llm(fake: Fake, mode: str, **kwargs: Any) -> OpenAILLM:
    return OpenAILLM(f"{fake.url}/{mode}/v1", "fake-model", api_key="secret", **kwargs)


async def _collect(llm: Any, messages: list[ChatMessage] = QUESTION, **kwargs: Any) -> list[str]:
    return [delta async for delta in llm.stream(messages, max_tokens=32, temperature=0.0, **kwargs)]


async def test_streams_deltas_and_sends_the_request(fake: Fake) -> None:
    llm = _llm(fake, "ok")
    try:
        assert await _collect(llm) == ["Hello", " there", "!"]
    finally:
        await llm.aclose()
    body = fake.bodies[-1]
    assert body["stream"] is True and body["model"] == "fake-model" and body["max_tokens"] == 32
    assert body["messages"][1] == {"role": "user", "content": "What is the capital of France?"}


async def test_non_streamed_answer_is_accepted(fake: Fake) -> None:
    llm = _llm(fake, "whole")
    try:
        assert await _collect(llm) == ["All at once."]
    finally:
        await llm.aclose()


async def test_images_as_data_urls_only_when_supported(fake: Fake) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    for supported in (True, False):
        llm = _llm(fake, "ok", supports_images=supported)
        try:
            await _collect(llm, images=[png])
        finally:
            await llm.aclose()
        content = fake.bodies[-1]["messages"][-1]["content"]
        if supported:
            assert content[0] == {"type": "text", "text": "What is the capital of France?"}
            assert content[1]["type"] == "image_url"
            assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
        else:
            assert content == "What is the capital of France?"


def test_request_helpers() -> None:
    assert data_url(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    assert data_url(b"RIFF\0\0\0\0WEBPVP8 ").startswith("data:image/webp;base64,")
    only_system = request_messages([ChatMessage("system", "s")], [b"\xff\xd8\xff"])
    assert only_system[-1]["role"] == "user" and only_system[-1]["content"][1]["type"] == "image_url"
    assert delta_content('{"choices": []}') == ""
    assert delta_content('{"choices": [{"delta": {"role": "assistant"}}]}') == ""
    with pytest.raises(LLMError):
        delta_content("not json")


async def test_server_error_is_retried_then_llm_error(fake: Fake) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    inner = _llm(fake, "fail")
    llm = WithRetries(inner, attempts=3, backoff=0.5, sleep=sleep)
    before = fake.hits.get("fail", 0)
    try:
        with pytest.raises(LLMError) as info:
            await _collect(llm)
    finally:
        await inner.aclose()
    assert fake.hits["fail"] - before == 3
    assert sleeps == [0.5, 1.0]
    assert "HTTP 500" in info.value.msg and "after 3 attempts" in info.value.msg
    assert info.value.code == 1218


async def test_refusal_is_not_retried(fake: Fake) -> None:
    inner = _llm(fake, "refuse")
    llm = WithRetries(inner, attempts=3, backoff=0.0)
    try:
        with pytest.raises(LLMError) as info:
            await _collect(llm)
    finally:
        await inner.aclose()
    assert fake.hits["refuse"] == 1
    assert info.value.retryable is False and "HTTP 401" in info.value.msg


async def test_retry_recovers_before_the_first_token(fake: Fake) -> None:
    inner = _llm(fake, "flaky")
    try:
        assert await _collect(WithRetries(inner, attempts=2, backoff=0.0)) == ["Second", " try"]
    finally:
        await inner.aclose()
    assert fake.hits["flaky"] == 2


async def test_hanging_server_hits_the_first_token_timeout_each_attempt(fake: Fake) -> None:
    inner = _llm(fake, "hang")
    llm = WithRetries(WithTimeout(inner, first_token_timeout=0.3, total_timeout=10), attempts=2, backoff=0.0)
    try:
        with pytest.raises(LLMError) as info:
            await _collect(llm)
    finally:
        await inner.aclose()
    assert fake.hits["hang"] == 2
    assert "did not start answering" in info.value.msg


async def test_stall_after_the_first_token_is_not_retried(fake: Fake) -> None:
    inner = _llm(fake, "stall")
    llm = WithRetries(WithTimeout(inner, first_token_timeout=5, total_timeout=0.5), attempts=3, backoff=0.0)
    got: list[str] = []
    try:
        with pytest.raises(LLMError) as info:
            async for delta in llm.stream(QUESTION, max_tokens=8, temperature=0.0):
                got.append(delta)
    finally:
        await inner.aclose()
    assert got == ["Partial"]
    assert fake.hits["stall"] == 1
    assert "did not finish" in info.value.msg


async def test_error_event_in_the_stream(fake: Fake) -> None:
    llm = _llm(fake, "error-event")
    try:
        with pytest.raises(LLMError, match="model crashed"):
            await _collect(llm)
    finally:
        await llm.aclose()


async def test_unreachable_server_is_llm_error() -> None:
    llm = OpenAILLM(f"http://127.0.0.1:{free_port()}/v1", "m")
    try:
        with pytest.raises(LLMError) as info:
            await _collect(llm)
    finally:
        await llm.aclose()
    assert info.value.retryable


async def test_closing_the_stream_closes_the_connection(fake: Fake) -> None:
    llm = _llm(fake, "endless")
    try:
        stream = llm.stream(QUESTION, max_tokens=8, temperature=0.0)
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(fake.stream_closed.wait(), 5)
    finally:
        await llm.aclose()
    assert got == ["la "] * 3


async def test_build_llm_wraps_the_openai_backend(fake: Fake) -> None:
    llm = build_llm(LLMSettings(backend="openai", base_url=f"{fake.url}/ok/v1", model="m", retries=2))
    assert isinstance(llm, WithRetries) and llm.attempts == 3
    assert isinstance(llm.llm, WithTimeout)
    try:
        assert "".join(await _collect(llm)) == "Hello there!"
    finally:
        await llm.aclose()
    with pytest.raises(LLMError, match="closed"):
        await _collect(llm)
    with pytest.raises(LLMError, match="unknown LLM backend"):
        build_llm(LLMSettings(backend="nope"))
    with pytest.raises(LLMError, match="model name"):
        build_llm(LLMSettings(backend="openai"))


# --- a real OpenAI-compatible server: llama.cpp's, serving SmolLM2 -------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    importlib.import_module("llama_cpp")
    importlib.import_module("sse_starlette")
    importlib.import_module("starlette_context")
    from liveavatar.llm import packaged_smollm2_path

    model = packaged_smollm2_path()
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--model_alias", "smollm2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "llama.cpp server did not start: " + log_path.read_text()[-3000:]
            time.sleep(0.2)
        yield f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_real_llama_cpp_server_streams_an_answer(llama_server: str) -> None:
    llm = OpenAILLM(llama_server, "smollm2")
    try:
        started = time.perf_counter()
        deltas: list[str] = []
        first: float | None = None
        async for delta in llm.stream(QUESTION, max_tokens=48, temperature=0.0):
            first = first or time.perf_counter() - started
            deltas.append(delta)
        total = time.perf_counter() - started
    finally:
        await llm.aclose()
    answer = "".join(deltas)
    assert answer.strip()
    assert len(deltas) >= 3
    print(f"\nllama.cpp server: {len(deltas)} deltas, first after {first:.3f} s, total {total:.2f} s: {answer!r}")


async def test_real_server_through_build_llm_and_early_close(llama_server: str) -> None:
    llm = build_llm(LLMSettings(backend="openai", base_url=llama_server, model="smollm2", first_token_timeout=30))
    stream = llm.stream([ChatMessage("user", "Tell me a long story about a dragon.")], max_tokens=200, temperature=0.7)
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()  # type: ignore[attr-defined]
    assert all(isinstance(delta, str) for delta in got)
    # The server is free again at once: a second request is answered.
    again = [d async for d in llm.stream(QUESTION, max_tokens=16, temperature=0.0)]
    assert "".join(again).strip()
    await llm.aclose()
