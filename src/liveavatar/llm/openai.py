"""OpenAI-compatible chat completions over HTTP (vLLM, Ollama, llama.cpp server, hosted APIs), streamed."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import httpx

from liveavatar.llm.base import ChatMessage, LLMError, estimate_tokens

DEFAULT_CONTEXT_TOKENS: Final = 8192
CONNECT_TIMEOUT: Final = 10.0
"""Seconds to open a connection; reading has no limit here (WithTimeout bounds the whole answer)."""
RETRYABLE_STATUS: Final = frozenset({408, 409, 425, 429})
"""4xx answers worth trying again; every 5xx is too, other 4xx are refusals."""
IMAGE_TYPES: Final = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
)


class OpenAILLM:
    """A `/chat/completions` endpoint with `stream: true`; one pooled HTTP client, closed by `aclose()`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        supports_images: bool = False,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.supports_images = supports_images
        self.context_tokens = context_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = headers
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT))

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    def count_tokens(self, text: str) -> int:
        """An estimate: the server's tokenizer is not at hand."""
        return estimate_tokens(text)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        images: Sequence[bytes] = (),
    ) -> AsyncIterator[str]:
        """POST the chat and yield `choices[0].delta.content` of each server-sent event until `[DONE]`."""
        if self._client.is_closed:
            raise LLMError("the LLM backend is closed", retryable=False)
        body = {
            "model": self.model,
            "messages": request_messages(messages, images if self.supports_images else ()),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        try:
            async with self._client.stream("POST", self.url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUS
                    raise LLMError(f"LLM server answered HTTP {response.status_code}: {detail}", retryable=retryable)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignored `stream: true` sends the whole answer at once.
                    text = message_content((await response.aread()).decode("utf-8", "replace"))
                    if text:
                        yield text
                    return
                async for line in response.aiter_lines():
                    data = sse_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        return
                    delta = delta_content(data)
                    if delta:
                        yield delta
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM server {self.url} failed: {type(exc).__name__}: {exc}") from exc
        # A stream that ends without [DONE] is taken as complete: several servers omit it.


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line, None for any other line (comments, event names, blanks)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def delta_content(data: str) -> str:
    """The text of one streamed chat chunk; LLMError for an error event or a chunk that is not JSON."""
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LLMError(f"LLM server sent a chunk that is not JSON: {data[:100]!r}") from exc
    if not isinstance(chunk, dict):
        raise LLMError(f"LLM server sent an unexpected chunk: {data[:100]!r}")
    if "error" in chunk:
        raise LLMError(f"LLM server reported an error: {str(chunk['error'])[:300]}")
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""  # usage-only chunks
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


def message_content(body: str) -> str:
    """The answer text of a whole (non-streamed) chat completion response."""
    try:
        response: Any = json.loads(body)
        content = response["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"LLM server sent an unexpected response: {body[:100]!r}") from exc
    return content if isinstance(content, str) else ""


def request_messages(messages: Sequence[ChatMessage], images: Sequence[bytes] = ()) -> list[dict[str, Any]]:
    """Messages as the API takes them; images go into the last user message as data-URL `image_url` parts."""
    out: list[dict[str, Any]] = [{"role": message.role, "content": message.content} for message in messages]
    if not images:
        return out
    last_user = max((i for i, message in enumerate(messages) if message.role == "user"), default=None)
    if last_user is None:
        out.append({"role": "user", "content": ""})
        last_user = len(out) - 1
    parts: list[dict[str, Any]] = [{"type": "text", "text": out[last_user]["content"]}]
    parts.extend({"type": "image_url", "image_url": {"url": data_url(image)}} for image in images)
    out[last_user]["content"] = parts
    return out


def data_url(image: bytes) -> str:
    """A base64 `data:` URL for an encoded image (type from its magic bytes, JPEG when unknown)."""
    mime = next((mime for magic, mime in IMAGE_TYPES if image.startswith(magic)), None)
    if mime is None:
        mime = "image/webp" if image[:4] == b"RIFF" and image[8:12] == b"WEBP" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"
