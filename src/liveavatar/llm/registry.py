"""LLM selection: one factory per backend name, driven by settings, wrapped in retries and time limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from liveavatar.llm.base import LLM, LLMError
from liveavatar.llm.local import (
    DEFAULT_CONTEXT_TOKENS,
    DEFAULT_LOCAL_MODEL,
    DEFAULT_STATE_CACHE_BYTES,
    DEFAULT_THREADS,
    LocalLLM,
)
from liveavatar.llm.openai import OpenAILLM
from liveavatar.llm.resilience import WithRetries, WithTimeout

RETRY_BACKOFF: Final = 0.5
"""Seconds before the first retry; doubled before each further one."""


@dataclass(frozen=True)
class LLMSettings:
    """What the LLM of dialogue mode is and how patient to be with it."""

    backend: str = "local"
    """A key of LLM_FACTORIES: `local` (llama.cpp) or `openai` (any OpenAI-compatible server)."""
    model_path: Path | None = None
    """GGUF file for `local`; when unset, the packaged model named by `local_model`."""
    local_model: str = DEFAULT_LOCAL_MODEL
    """A key of PACKAGED_MODELS: which installed packaged model `local` runs."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the OpenAI-compatible API (the part before `/chat/completions`)."""
    model: str = ""
    """Model name sent to the `openai` backend."""
    api_key: str | None = None
    timeout: float = 60.0
    """Seconds one attempt may spend waiting on the backend (time the consumer holds a delta not counted)."""
    first_token_timeout: float = 15.0
    """Seconds until the first token of an answer."""
    retries: int = 1
    """Further attempts after a failure that happens before the first token."""
    max_tokens: int = 200
    """Longest answer, in tokens."""
    temperature: float = 0.7
    supports_images: bool = False
    """Whether the `openai` model takes images (the session's camera frames)."""
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    """Context window: the local model is loaded with it; for `openai`, the server model's window."""
    threads: int = DEFAULT_THREADS
    """CPU threads of the local model; 0: half the usable cores, at most 4 (1 on a 2-core box)."""
    state_cache_mb: int = DEFAULT_STATE_CACHE_BYTES >> 20
    """RAM for the local model's saved conversation states (0: none): makes sessions taking turns cheap."""


def _local(settings: LLMSettings) -> LLM:
    return LocalLLM(
        model_path=settings.model_path,
        local_model=settings.local_model,
        context_tokens=settings.context_tokens,
        threads=settings.threads,
        state_cache_bytes=settings.state_cache_mb << 20,
    )


def _openai(settings: LLMSettings) -> LLM:
    if not settings.model:
        raise LLMError("the openai LLM backend needs a model name", retryable=False)
    return OpenAILLM(
        settings.base_url,
        settings.model,
        api_key=settings.api_key,
        supports_images=settings.supports_images,
        context_tokens=settings.context_tokens,
    )


LLM_FACTORIES: dict[str, Callable[[LLMSettings], LLM]] = {"local": _local, "openai": _openai}


def build_llm(settings: LLMSettings, factories: dict[str, Callable[[LLMSettings], LLM]] = LLM_FACTORIES) -> LLM:
    """The configured backend, each attempt under the time limits, retried before its first token."""
    factory = factories.get(settings.backend)
    if factory is None:
        raise LLMError(
            f"unknown LLM backend {settings.backend!r}; known: {', '.join(sorted(factories))}", retryable=False
        )
    timed = WithTimeout(
        factory(settings), first_token_timeout=settings.first_token_timeout, total_timeout=settings.timeout
    )
    return WithRetries(timed, attempts=settings.retries + 1, backoff=RETRY_BACKOFF)
