"""Session routes: create, detail, close, list."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from liveavatar.api.auth import Auth, ServicesDep
from liveavatar.api.credentials import credentials as join_credentials
from liveavatar.api.envelope import ok
from liveavatar.api.schemas import SessionCreate, SessionRef
from liveavatar.clock import new_id, now_ms
from liveavatar.errors import NotFound, ParamError, QuotaExceeded
from liveavatar.services import Services
from liveavatar.store.models import SessionRow
from liveavatar.store.sessions import LIVE_STATES, Status

router = APIRouter(prefix="/api/open/v4/liveAvatar/session", tags=["sessions"])


def base_url(request: Request, services: Services) -> str:
    """The URL clients reach this server at."""
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


def session_view(row: SessionRow, services: Services, base: str) -> dict[str, Any]:
    """The session object of the API; join credentials only while the session can be joined."""
    credentials: dict[str, Any] = {}
    if row.status in LIVE_STATES:
        token = services.signer.sign(row.id, "join", services.settings.join_token_ttl)
        credentials = join_credentials(row.stream_type, row.id, base, token, services.settings.ice_servers)
    params = row.params
    return {
        "_id": row.id,
        "uid": services.signer.owner_uid(row.owner_id),
        "type": 1,
        "status": row.status,
        "stream_type": row.stream_type,
        "credentials": credentials,
        "avatar_id": row.avatar_id,
        "duration": row.duration,
        "mode_type": row.mode_type,
        "knowledge_id": params.get("knowledge_id") or "",
        "voice_id": params.get("voice_id") or "",
        "voice_url": params.get("voice_url") or "",
        "language": params.get("language") or "",
        "background_url": params.get("background_url") or "",
        "voice_params": params.get("voice_params") or {},
        "render": params.get("render") or "server",
        "create_time": row.create_time,
        "update_time": row.update_time,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "close_reason": row.close_reason,
    }


async def _check_references(body: SessionCreate, owner_id: int, services: Services) -> None:
    await services.avatar_jobs.check_usable(body.avatar_id, owner_id)
    avatar = services.avatars.get(body.avatar_id, owner_id)
    if body.render == "client" and avatar is not None and services.avatars.is_video(avatar.pack_key):
        raise ParamError(f"avatar {body.avatar_id!r} is built from a video: render 'client' draws photo avatars only")
    if body.voice_id is not None and services.voices.get(body.voice_id) is None:
        raise NotFound(f"voice {body.voice_id!r} does not exist")
    if body.language is not None and not services.voices.speaks(body.language):
        raise ParamError(f"language {body.language!r} is not supported")
    if body.knowledge_id is not None and await services.store.knowledge.get(body.knowledge_id, owner_id) is None:
        raise NotFound(f"knowledge base {body.knowledge_id!r} does not exist")


async def _check_quota(owner_id: int, services: Services) -> None:
    """QuotaExceeded (1006) when the key already holds `max_sessions_per_key` live sessions."""
    limit = services.settings.max_sessions_per_key
    if not limit:
        return
    live = 0
    for status in LIVE_STATES:
        count, _ = await services.store.sessions.page(owner_id, page=1, size=1, status=int(status))
        live += count
    if live >= limit:
        raise QuotaExceeded(f"this API key already holds {live} live sessions (limit {limit}); close one first")


def _create_lock(request: Request, owner_id: int) -> asyncio.Lock:
    """One lock per key and process: a key's quota check and its new session's row go in together."""
    state = request.app.state
    if not hasattr(state, "create_locks"):
        state.create_locks = defaultdict(asyncio.Lock)
    lock: asyncio.Lock = state.create_locks[owner_id]
    return lock


@router.post("/create", summary="Create a streaming session")
async def create_session(body: SessionCreate, principal: Auth, services: ServicesDep, request: Request) -> Any:
    await _check_references(body, principal.key_id, services)
    duration = body.duration or services.settings.default_session_duration
    async with _create_lock(request, principal.key_id), services.director.reservation():
        await _check_quota(principal.key_id, services)
        now = now_ms()
        row = SessionRow(
            id=new_id(),
            owner_id=principal.key_id,
            avatar_id=body.avatar_id,
            status=int(Status.QUEUEING),
            stream_type=body.stream_type,
            mode_type=body.mode_type,
            duration=duration,
            params=body.model_dump(
                include={
                    "knowledge_id",
                    "voice_id",
                    "voice_url",
                    "language",
                    "background_url",
                    "voice_params",
                    "transport_profile",
                    "render",
                },
                exclude_none=True,
            )
            # A provider's client keeps to its data-channel limits: the server keeps to them too.
            | {"transport_profile": body.transport_profile or body.stream_type},
            create_time=now,
            update_time=now,
            expire_time=now + duration * 1000,
        )
        await services.director.open(row)  # stored, placed on the least-loaded host, started there
    return ok(session_view(row, services, base_url(request, services)))


@router.get("/detail", summary="One session")
async def session_detail(
    principal: Auth, services: ServicesDep, request: Request, id: Annotated[str, Query(min_length=1)]
) -> Any:
    row = await services.store.sessions.get(id, principal.key_id)
    if row is None:
        raise NotFound(f"session {id!r} does not exist")
    return ok(session_view(row, services, base_url(request, services)))


@router.post("/close", summary="Close a session (idempotent)")
async def close_session(body: SessionRef, principal: Auth, services: ServicesDep, request: Request) -> Any:
    row = await services.store.sessions.get(body.target, principal.key_id)
    if row is None:
        raise NotFound(f"session {body.target!r} does not exist")
    await services.director.close(row.id, "closed by the client")
    row = await services.store.sessions.get(row.id) or row
    return ok(session_view(row, services, base_url(request, services)))


@router.get("/list", summary="The caller's sessions, newest first")
async def list_sessions(
    principal: Auth,
    services: ServicesDep,
    request: Request,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[int | None, Query(ge=1, le=4)] = None,
) -> Any:
    count, rows = await services.store.sessions.page(principal.key_id, page=page, size=size, status=status)
    base = base_url(request, services)
    return ok({"count": count, "page": page, "size": size, "result": [session_view(r, services, base) for r in rows]})


@router.get("/transcript", summary="What was said in a live session (liveavatar extension)")
async def session_transcript(principal: Auth, services: ServicesDep, id: Annotated[str, Query(min_length=1)]) -> Any:
    """The client's messages and what the user actually heard of each reply, plus interrupt timings."""
    row = await services.store.sessions.get(id, principal.key_id)
    if row is None:
        raise NotFound(f"session {id!r} does not exist")
    transcript = await services.director.transcript(id)
    if transcript is None:
        return ok({"live": False, "messages": [], "interrupts": [], "barge_ins": [], "passages": []})
    return ok(transcript)
