"""Knowledge base routes (storage and validation; ingestion runs elsewhere)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from liveavatar.api.auth import Auth, ServicesDep
from liveavatar.api.envelope import ok
from liveavatar.api.schemas import KnowledgeCreate, KnowledgeRef, KnowledgeUpdate
from liveavatar.clock import new_id, now_ms
from liveavatar.errors import NotFound, TooLarge
from liveavatar.knowledge.jobs import IngestionJobs
from liveavatar.store.knowledge import SOURCE_FIELDS
from liveavatar.store.models import KnowledgeBase

router = APIRouter(prefix="/api/open/v4/knowledge", tags=["knowledge"])
UPLOAD_PATH = "/api/open/v4/knowledge/upload"
UPLOAD_MAX_BYTES = 100 * 1024 * 1024


def _ingest_view(status: dict[str, Any]) -> dict[str, Any]:
    """The ingest object without the server's file paths: an uploaded file's source reads `upload:<name>`."""
    for document in status.get("documents", []):
        source = str(document.get("source", ""))
        if source and not source.startswith(("http://", "https://")):
            document["source"] = f"upload:{document.get('name') or PurePath(source).name}"
    return status


def knowledge_view(row: KnowledgeBase, jobs: IngestionJobs, uid: int) -> dict[str, Any]:
    """The knowledge base object of the API, with its ingestion progress and per-document status."""
    status = jobs.status(row.id)
    return {
        "_id": row.id,
        "uid": uid,
        "name": row.name,
        "prologue": row.prologue,
        "prompt": row.prompt,
        "docs": row.docs,
        "urls": row.urls,
        "create_time": row.create_time,
        "update_time": row.update_time,
        "ingest": _ingest_view(status.to_api()) if status else {"state": "pending", "progress": 0.0, "documents": []},
    }


def _missing(kb_id: str) -> NotFound:
    return NotFound(f"knowledge base {kb_id!r} does not exist")


@router.post("/create", summary="Create a knowledge base")
async def create_knowledge(body: KnowledgeCreate, principal: Auth, services: ServicesDep) -> Any:
    now = now_ms()
    fields = body.changes()
    row = KnowledgeBase(
        id=new_id(),
        owner_id=principal.key_id,
        name=fields["name"],
        prologue=fields.get("prologue") or "",
        prompt=fields.get("prompt") or "",
        docs=fields.get("docs") or [],
        urls=fields.get("urls") or [],
        revision=0,
        create_time=now,
        update_time=now,
    )
    await services.store.knowledge.add(row)
    services.knowledge.start(row)
    return ok(knowledge_view(row, services.knowledge, services.signer.owner_uid(row.owner_id)))


@router.get("/list", summary="The caller's knowledge bases")
async def list_knowledge(
    principal: Auth,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 10,
    name: Annotated[str | None, Query(max_length=100)] = None,
) -> Any:
    rows = await services.store.knowledge.page(principal.key_id, page=page, size=size, name=name)
    return ok([knowledge_view(row, services.knowledge, services.signer.owner_uid(row.owner_id)) for row in rows])


@router.get("/detail", summary="One knowledge base")
async def knowledge_detail(principal: Auth, services: ServicesDep, id: Annotated[str, Query(min_length=1)]) -> Any:
    row = await services.store.knowledge.get(id, principal.key_id)
    if row is None:
        raise _missing(id)
    return ok(knowledge_view(row, services.knowledge, services.signer.owner_uid(row.owner_id)))


@router.post("/update", summary="Change a knowledge base")
async def update_knowledge(body: KnowledgeUpdate, principal: Auth, services: ServicesDep) -> Any:
    changes = body.changes()
    row = await services.store.knowledge.update(body.id, principal.key_id, changes)
    if row is None:
        raise _missing(body.id)
    if SOURCE_FIELDS & changes.keys():
        services.knowledge.start(row)  # re-index what changed
    return ok(knowledge_view(row, services.knowledge, services.signer.owner_uid(row.owner_id)))


@router.delete("/delete", summary="Delete a knowledge base")
async def delete_knowledge(body: KnowledgeRef, principal: Auth, services: ServicesDep) -> Any:
    if not await services.store.knowledge.delete(body.id, principal.key_id):
        raise _missing(body.id)
    services.knowledge.delete(body.id)
    return ok(None)


@router.post("/upload", summary="Add a local file to a knowledge base (liveavatar extension, multipart)")
async def upload_knowledge(
    principal: Auth,
    services: ServicesDep,
    id: Annotated[str, Form(min_length=1, max_length=64)],
    file: Annotated[UploadFile, File(description="PDF, DOC, DOCX, TXT, MD, JSON, XML or CSV, up to 100 MB")],
) -> Any:
    """Store the file with the base and re-index it; progress shows in the detail response."""
    row = await services.store.knowledge.get(id, principal.key_id)
    if row is None:
        raise _missing(id)
    data = await file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise TooLarge(f"{file.filename!r} is larger than {UPLOAD_MAX_BYTES} bytes", limit=UPLOAD_MAX_BYTES)
    await services.knowledge.ingestor.ingest_upload(row.id, file.filename or "upload", data)
    # the new revision is committed before the job starts: a server that dies now re-indexes on restart
    row = await services.store.knowledge.new_revision(row.id, principal.key_id)
    if row is None:
        raise _missing(id)
    services.knowledge.start(row)
    return ok(knowledge_view(row, services.knowledge, services.signer.owner_uid(row.owner_id)))
