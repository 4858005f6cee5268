"""Ingestion: fetch a base's documents and web pages, extract, chunk, index, and swap the new index in atomically."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from liveavatar.clock import now_ms
from liveavatar.errors import LiveAvatarError, ParamError, TooLarge
from liveavatar.fetch import fetch
from liveavatar.knowledge.chunking import Chunk, chunk_text
from liveavatar.knowledge.extract import detect_format, extract_text
from liveavatar.knowledge.index import CURRENT, IndexCache, KnowledgeIndex, current_version, default_embedder

log = logging.getLogger(__name__)

MB = 1024 * 1024
FETCH_SHARE = 0.6
EXTRACT_TIMEOUT = 300.0
"""Seconds one document may spend in extraction before it is reported failed."""

BaseState = Literal["indexing", "ready", "failed"]
DocumentState = Literal["pending", "fetching", "indexing", "ready", "failed"]
_KB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
T = TypeVar("T")


@dataclass(frozen=True)
class DocumentStatus:
    """Where one source of a base stands: `name` as given, `source` (its URL or upload path), state and reason."""

    name: str
    source: str
    state: DocumentState = "pending"
    reason: str = ""
    chunks: int = 0

    def to_api(self) -> dict[str, Any]:
        """The document's entry in the detail response."""
        return asdict(self)


@dataclass(frozen=True)
class IngestStatus:
    """A snapshot of one base's ingestion: overall state, progress 0..1, per-document status."""

    state: BaseState
    progress: float
    documents: tuple[DocumentStatus, ...] = ()
    chunks: int = 0
    updated: int = field(default_factory=now_ms)
    reason: str = ""
    """Why the whole ingestion failed (documents carry their own reasons)."""
    revision: int = 0
    """The base's revision (its sources' version) this status is about; stored, not shown."""

    def to_api(self) -> dict[str, Any]:
        """The `ingest` object of the knowledge detail response."""
        return {
            "state": self.state,
            "progress": round(self.progress, 3),
            "documents": [document.to_api() for document in self.documents],
            "chunks": self.chunks,
            "updated": self.updated,
            "reason": self.reason,
        }

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> IngestStatus:
        """The inverse of `to_api`."""
        return cls(
            state=data["state"],
            progress=float(data["progress"]),
            documents=tuple(DocumentStatus(**document) for document in data.get("documents", [])),
            chunks=int(data.get("chunks", 0)),
            updated=int(data.get("updated", 0)),
            reason=str(data.get("reason", "")),
            revision=int(data.get("revision", 0)),
        )


@dataclass(frozen=True)
class _Source:
    name: str
    source: str
    kind: Literal["doc", "url", "upload"]


def _sources(docs: Sequence[dict[str, Any]], urls: Sequence[str], uploads: Sequence[tuple[str, Path]]) -> list[_Source]:
    return [
        *(_Source(str(doc.get("name") or doc.get("url") or ""), str(doc.get("url") or ""), "doc") for doc in docs),
        *(_Source(str(url), str(url), "url") for url in urls),
        *(_Source(name, str(path), "upload") for name, path in uploads),
    ]


class _Run:
    """One ingestion of one base: its documents' states and the status it reports as it goes."""

    def __init__(
        self, sources: Sequence[_Source], revision: int, progress: Callable[[IngestStatus], None] | None = None
    ) -> None:
        self.documents = [DocumentStatus(source.name, source.source) for source in sources]
        # fetching and reading the sources is the first FETCH_SHARE of the progress, building the index the rest
        self.steps = max(1, len(sources)) / FETCH_SHARE
        self.status = IngestStatus("indexing", 0.0, tuple(self.documents), revision=revision)
        self._progress = progress

    def report(self, done: float, **changes: Any) -> None:
        """Record `done` steps (progress never goes back) and `changes`; tell the progress callback."""
        if self.status.state != "indexing":
            return
        fraction = min(max(done / self.steps, self.status.progress), 1.0)
        status = replace(self.status, documents=tuple(self.documents), progress=fraction, updated=now_ms())
        self.status = replace(status, **changes)
        if self._progress is not None:
            try:
                self._progress(self.status)
            except Exception:
                log.exception("knowledge progress callback failed")


class Ingestor:
    """Builds and stores the indexes of knowledge bases under `root` (one folder per base)."""

    def __init__(
        self,
        root: Path,
        *,
        allow_private_urls: bool,
        max_file_bytes: int = 100 * MB,
        max_total_bytes: int = 500 * MB,
        timeout: float = 30.0,
        embeddings: bool = True,
    ) -> None:
        self.root = root
        self.allow_private_urls = allow_private_urls
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.timeout = timeout
        self.embeddings = embeddings
        self.indexes = IndexCache(root, embeddings=embeddings)
        # one worker thread: ingestion must not take every core from live sessions
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge")
        self._locks: dict[str, asyncio.Lock] = {}
        self._generation: dict[str, int] = {}
        self._runs: dict[str, _Run] = {}
        """The latest run of each base being indexed (or scheduled): the live status detail shows."""

    def index(self, kb_id: str) -> KnowledgeIndex | None:
        """The live index of `kb_id` (cached per version), None when the base was never ingested."""
        return self.indexes.get(_checked(kb_id))

    def status(self, kb_id: str) -> IngestStatus | None:
        """The live status of a run of `kb_id` in progress, else the last one stored."""
        run = self._runs.get(_checked(kb_id))
        if run is not None:
            return run.status
        try:
            return IngestStatus.from_api(json.loads((self.root / kb_id / "status.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def schedule(
        self,
        kb_id: str,
        docs: Sequence[dict[str, Any]],
        urls: Sequence[str],
        uploads: Sequence[tuple[str, Path]] = (),
        *,
        revision: int = 0,
    ) -> None:
        """Show `kb_id` as indexing these sources from now on (an `ingest` of them follows)."""
        kb_id = _checked(kb_id)
        self._runs[kb_id] = _Run(_sources(docs, urls, uploads), revision)

    def delete(self, kb_id: str) -> None:
        """Remove the base's index, status and uploads; an ingestion still running for it is discarded."""
        kb_id = _checked(kb_id)
        self._generation[kb_id] = self._generation.get(kb_id, 0) + 1
        self._runs.pop(kb_id, None)
        self.indexes.forget(kb_id)
        shutil.rmtree(self.root / kb_id, ignore_errors=True)

    async def ingest_upload(self, kb_id: str, name: str, data: bytes) -> Path:
        """Store an uploaded file for base `kb_id`; pass the returned path in `uploads` to `ingest`."""
        kb_id = _checked(kb_id)
        if len(data) > self.max_file_bytes:
            raise TooLarge(f"{name[:200]!r} is larger than {self.max_file_bytes} bytes", limit=self.max_file_bytes)
        if detect_format(name, "", data[:65536]) is None:
            raise ParamError(f"unsupported document format: {name[:200]!r}")
        folder = self.root / kb_id / "uploads" / secrets.token_hex(8)
        path = folder / _safe_name(name)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path

    async def aclose(self) -> None:
        """Stop the worker thread (after the work it holds)."""
        await asyncio.to_thread(self._worker.shutdown)

    async def ingest(
        self,
        kb_id: str,
        docs: Sequence[dict[str, Any]],
        urls: Sequence[str],
        uploads: Sequence[tuple[str, Path]] = (),
        progress: Callable[[IngestStatus], None] | None = None,
        *,
        revision: int = 0,
    ) -> IngestStatus:
        """Fetch, extract, chunk and index every source, then replace the base's index; never raises for a source.

        `revision` is the base's revision these sources belong to; it is stored with the status (from the
        start, so that a server that dies meanwhile knows on restart that this base needs indexing).
        """
        kb_id = _checked(kb_id)
        lock = self._locks.setdefault(kb_id, asyncio.Lock())
        async with lock:
            generation = self._generation.get(kb_id, 0)
            sources = _sources(docs, urls, uploads)
            run = _Run(sources, revision, progress)
            self._runs[kb_id] = run
            try:
                run.report(0)
                await asyncio.to_thread(self._store_status, kb_id, run.status, generation)
                chunks = await self._read_sources(kb_id, run, sources)
                return await self._build_and_swap(kb_id, run, chunks, generation)
            finally:
                # a later `schedule` or run has replaced this one when it is not ours any more
                if self._runs.get(kb_id) is run:
                    del self._runs[kb_id]

    async def _read_sources(self, kb_id: str, run: _Run, sources: Sequence[_Source]) -> list[Chunk]:
        """Fetch or load, extract and chunk each source in turn; a source that fails is marked so, alone."""
        chunks: list[Chunk] = []
        used = 0
        for number, source in enumerate(sources):
            run.documents[number] = replace(run.documents[number], state="fetching")
            run.report(number)
            try:
                data, content_type = await self._read(source, self.max_total_bytes - used)
                used += len(data)
                run.documents[number] = replace(run.documents[number], state="indexing")
                run.report(number + 0.5)
                hint = source.name if detect_format(source.name) or source.kind == "upload" else source.source
                found = await asyncio.wait_for(
                    self._in_worker(_extract_chunks, data, hint, content_type, source.name), EXTRACT_TIMEOUT
                )
            except TimeoutError:
                found, reason = [], f"reading the document took longer than {EXTRACT_TIMEOUT:g} s"
            except TooLarge as exc:
                found, reason = [], exc.msg
                if exc.limit < self.max_file_bytes:  # what was left of the total was the tighter limit
                    reason = f"the base's documents exceed {self.max_total_bytes} bytes in total: {reason}"
            except LiveAvatarError as exc:
                found, reason = [], exc.msg
            except Exception as exc:  # a document must never stop the others
                log.exception("knowledge %s: unexpected error reading %s", kb_id, source.name)
                found, reason = [], f"unexpected error: {type(exc).__name__}: {exc}"
            else:
                reason = "" if found else "no text found in the document (a scanned PDF needs OCR first)"
            if found:
                chunks.extend(found)
                run.documents[number] = replace(run.documents[number], state="indexing", chunks=len(found))
            else:
                run.documents[number] = replace(run.documents[number], state="failed", reason=reason[:500])
                log.info("knowledge %s: %s failed: %s", kb_id, source.name, reason)
            run.report(number + 1)
        return chunks

    async def _build_and_swap(self, kb_id: str, run: _Run, chunks: list[Chunk], generation: int) -> IngestStatus:
        """Build the index from `chunks` beside the live one, swap it in, and store the final status."""
        loop = asyncio.get_running_loop()
        steps = run.steps

        def building(fraction: float) -> None:  # called in the worker thread
            done = steps * (FETCH_SHARE + (1 - FETCH_SHARE) * fraction)
            loop.call_soon_threadsafe(run.report, min(done, steps * 0.99))

        run.report(steps * FETCH_SHARE)
        documents = run.documents
        try:
            version = await self._in_worker(self._build, kb_id, chunks, building)
        except Exception as exc:  # disk full, permissions: the old index stays live
            log.exception("knowledge %s: building the index failed", kb_id)
            for number, document in enumerate(documents):
                if document.state != "failed":
                    documents[number] = replace(document, state="failed", reason="the index could not be built")
            reason = f"the index could not be built: {type(exc).__name__}: {exc}"[:500]
            run.report(steps, state="failed", reason=reason)
            await asyncio.to_thread(self._store_status, kb_id, run.status, generation)
            return run.status
        if self._generation.get(kb_id, 0) != generation:
            await self._in_worker(_remove_base, version)  # deleted while we worked
            run.report(steps, state="failed", reason="the knowledge base was deleted during ingestion")
            return run.status
        self._swap(kb_id, version)
        await self._in_worker(self._prune, kb_id)
        ready = 0
        for number, document in enumerate(documents):
            if document.state != "failed":
                documents[number] = replace(document, state="ready")
                ready += 1
        failed = bool(documents) and not ready
        run.report(
            steps,
            state="failed" if failed else "ready",
            chunks=len(chunks),
            reason="no document could be read" if failed else "",
        )
        await asyncio.to_thread(self._store_status, kb_id, run.status, generation)
        return run.status

    async def _read(self, source: _Source, budget: int) -> tuple[bytes, str]:
        """The bytes and content type of one source, within the per-file limit and what is left of the total."""
        limit = max(0, min(self.max_file_bytes, budget))
        if source.kind == "upload":
            path = Path(source.source)

            def load() -> bytes:
                size = path.stat().st_size
                if size > limit:
                    raise TooLarge(f"{source.name[:200]!r} is larger than {limit} bytes", limit=limit)
                return path.read_bytes()

            try:
                return await asyncio.to_thread(load), ""
            except OSError as exc:
                raise ParamError(f"cannot read the uploaded file {source.name[:200]!r}: {exc.strerror}") from exc
        if not source.source:
            raise ParamError(f"{source.name[:200]!r} has no URL")
        fetched = await fetch(
            source.source, max_bytes=limit, timeout=self.timeout, allow_private=self.allow_private_urls
        )
        return fetched.content, fetched.content_type

    async def _in_worker(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    def _build(self, kb_id: str, chunks: list[Chunk], progress: Callable[[float], None]) -> Path:
        """Build the index into a fresh version folder (never the live one); its path."""
        base = self.root / kb_id
        base.mkdir(parents=True, exist_ok=True)
        temporary = base / f".tmp-{secrets.token_hex(6)}"
        try:
            embedder = default_embedder() if self.embeddings else None
            KnowledgeIndex.build(chunks, embedder=embedder, progress=progress).save(temporary)
            version = base / f"v-{now_ms()}-{secrets.token_hex(4)}"
            temporary.rename(version)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return version

    def _swap(self, kb_id: str, version: Path) -> None:
        """Point the base at `version` in one rename (readers see the old index or the new one, never a mix)."""
        base = self.root / kb_id
        pointer = base / f".{CURRENT}-{secrets.token_hex(4)}"
        pointer.write_text(version.name)
        pointer.replace(base / CURRENT)
        self.indexes.forget(kb_id)

    def _prune(self, kb_id: str) -> None:
        """Remove the versions (and abandoned temporary folders) that the live one replaced."""
        base = self.root / kb_id
        live = current_version(base)
        with contextlib.suppress(OSError):  # the base may be deleted meanwhile
            for entry in base.iterdir():
                if entry.is_dir() and entry.name.startswith(("v-", ".tmp-")) and entry != live:
                    shutil.rmtree(entry, ignore_errors=True)

    def _store_status(self, kb_id: str, status: IngestStatus, generation: int) -> None:
        if self._generation.get(kb_id, 0) != generation:
            return
        base = self.root / kb_id
        try:
            base.mkdir(parents=True, exist_ok=True)
            temporary = base / f".status-{secrets.token_hex(4)}"
            temporary.write_text(json.dumps({**status.to_api(), "revision": status.revision}))
            temporary.replace(base / "status.json")
        except OSError:
            log.exception("knowledge %s: cannot store the ingestion status", kb_id)


def _extract_chunks(data: bytes, hint: str, content_type: str, name: str) -> list[Chunk]:
    return chunk_text(extract_text(data, hint, content_type), name)


def _remove_base(version: Path) -> None:
    shutil.rmtree(version, ignore_errors=True)
    with contextlib.suppress(OSError):
        version.parent.rmdir()


def _checked(kb_id: str) -> str:
    if not _KB_ID.fullmatch(kb_id):
        raise ParamError(f"invalid knowledge base id {kb_id[:80]!r}")
    return kb_id


def _safe_name(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.+-]+", "_", base).strip("._") or "upload"
    return cleaned[-120:]
