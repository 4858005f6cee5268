"""Background ingestion: one job per knowledge base, restarted when the base changes, resumed after a restart."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from liveavatar.knowledge.ingest import Ingestor, IngestStatus
from liveavatar.store.models import KnowledgeBase

log = logging.getLogger(__name__)


class IngestionJobs:
    """Owns the ingestion tasks; the Ingestor does the work and keeps each base's status on disk."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self._jobs: dict[str, asyncio.Task[None]] = {}

    def uploads(self, kb_id: str) -> list[tuple[str, Path]]:
        """The files uploaded to a base, as (name, path)."""
        folder = self.ingestor.root / kb_id / "uploads"
        return sorted((path.name, path) for path in folder.glob("*/*") if path.is_file())

    def start(self, kb: KnowledgeBase) -> None:
        """(Re)index a base in the background; a job already running for it is replaced.

        The base shows `indexing` from this call on (the answer to the request that started it says so).
        """
        self._cancel(kb.id)
        docs, urls, uploads = list(kb.docs), list(kb.urls), self.uploads(kb.id)
        self.ingestor.schedule(kb.id, docs, urls, uploads, revision=kb.revision)
        task = asyncio.create_task(self._run(kb.id, docs, urls, uploads, kb.revision), name=f"ingest-{kb.id}")
        self._jobs[kb.id] = task
        task.add_done_callback(lambda done: self._jobs.pop(kb.id, None) if self._jobs.get(kb.id) is done else None)

    async def _run(
        self, kb_id: str, docs: list[dict[str, Any]], urls: list[str], uploads: list[tuple[str, Path]], revision: int
    ) -> None:
        try:
            status = await self.ingestor.ingest(kb_id, docs, urls, uploads, revision=revision)
            log.info("knowledge base %s: %s, %d passages", kb_id, status.state, status.chunks)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("ingesting knowledge base %s failed", kb_id)

    def status(self, kb_id: str) -> IngestStatus | None:
        """The base's latest ingestion status."""
        return self.ingestor.status(kb_id)

    def resume(self, bases: list[KnowledgeBase]) -> None:
        """Restart ingestions a previous server left unfinished, never started, or ran on older sources."""
        for kb in bases:
            status = self.ingestor.status(kb.id)
            if status is None or status.state == "indexing" or status.revision != kb.revision:
                if status is not None:
                    log.info("knowledge base %s: resuming its ingestion (revision %d)", kb.id, kb.revision)
                self.start(kb)

    def delete(self, kb_id: str) -> None:
        """Stop a base's job and remove its index and uploads."""
        self._cancel(kb_id)
        self.ingestor.delete(kb_id)

    def _cancel(self, kb_id: str) -> None:
        job = self._jobs.pop(kb_id, None)
        if job is not None:
            job.cancel()

    async def aclose(self) -> None:
        """Stop every job and the ingestion worker."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.ingestor.aclose()
