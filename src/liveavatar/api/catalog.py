"""Catalog routes: avatars (built-in and custom, with public preview images), voices, languages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import Field, StringConstraints

from liveavatar.api.auth import Auth, ServicesDep
from liveavatar.api.envelope import ok
from liveavatar.api.schemas import Body, HttpUrl
from liveavatar.api.sessions import base_url
from liveavatar.avatars.intake import MAX_SOURCE_BYTES
from liveavatar.avatars.jobs import AvatarJobs
from liveavatar.avatars.voice import matching_voice_id
from liveavatar.errors import NoPermission, NotFound, ParamError
from liveavatar.fetch import check_url
from liveavatar.services import Services
from liveavatar.speech.base import Voice
from liveavatar.store.avatars import AvatarStatus
from liveavatar.store.models import AvatarRow

router = APIRouter(tags=["catalog"])
Page = Annotated[int, Query(ge=1, le=1_000_000)]
AvatarId = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9]+$", min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
UPLOAD_PATH = "/api/open/v3/avatar/upload"
UPLOAD_MAX_BYTES = MAX_SOURCE_BYTES


class AvatarCreate(Body):
    """`POST /api/open/v3/avatar/create`: a streaming avatar from a photo or video URL."""

    url: HttpUrl
    avatar_id: AvatarId
    name: Name
    type: Literal[2] = 2
    url_from: Literal[1, 2] = 1
    gender: Literal["male", "female"] | None = None
    """liveavatar extension: picks the matching default voice."""
    voice_id: str | None = Field(None, max_length=100)
    """liveavatar extension: the avatar's default voice."""
    framing: Literal["presenter", "original"] = "presenter"
    """liveavatar extension: zoom to head and shoulders, or keep the photo's own framing."""


class AvatarRef(Body):
    """`POST /api/open/v3/avatar/delete` (liveavatar extension)."""

    avatar_id: AvatarId


def custom_view(row: AvatarRow, jobs: AvatarJobs, base: str) -> dict[str, Any]:
    """The avatar object of the API for a custom avatar, with its build status, progress and reason."""
    live = jobs.progress(row.id)
    stage, progress = live if live is not None else (row.stage, row.progress)
    return {
        "_id": row.id,
        "uid": row.owner_id or 0,
        "type": 2,
        "from": 3 if row.owner_id is not None else 2,
        "avatar_id": row.avatar_id,
        "voice_id": row.voice_id,
        "name": row.name,
        "url": f"{base}/avatars/{row.id}/preview.jpg",
        "thumbnailUrl": f"{base}/avatars/{row.id}/thumbnail.jpg",
        "gender": row.gender,
        "available": row.status == AvatarStatus.READY,
        "status": row.status,
        "msg": row.msg,
        "stage": stage,
        "progress": round(progress, 3),
        "url_from": row.url_from,
        "framing": row.framing,
        "create_time": row.create_time,
        "update_time": row.update_time,
    }


async def _visible(services: Services, owner_id: int, base: str) -> list[dict[str, Any]]:
    builtin = [
        avatar.to_api(base, matching_voice_id(services.voices, avatar.gender)) for avatar in services.avatars.builtin()
    ]
    rows = await services.store.avatars.visible(owner_id)
    return builtin + [custom_view(row, services.avatar_jobs, base) for row in rows]


@router.get("/api/open/v4/liveAvatar/avatar/list", summary="Built-in avatars and the caller's own")
async def list_avatars(
    principal: Auth,
    services: ServicesDep,
    request: Request,
    page: Page = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 100,
) -> Any:
    avatars = await _visible(services, principal.key_id, base_url(request, services))
    result = avatars[(page - 1) * size : page * size]
    return ok({"count": len(avatars), "page": page, "size": size, "result": result})


@router.get("/api/open/v4/liveAvatar/avatar/detail", summary="One avatar, with its build status")
async def avatar_detail(
    principal: Auth, services: ServicesDep, request: Request, avatar_id: Annotated[str, Query(min_length=1)]
) -> Any:
    base = base_url(request, services)
    avatar = services.avatars.official(avatar_id)
    if avatar is not None:
        return ok(avatar.to_api(base, matching_voice_id(services.voices, avatar.gender)))
    row = await services.store.avatars.get(avatar_id, principal.key_id)
    if row is None:
        raise NotFound(f"avatar {avatar_id!r} does not exist")
    return ok(custom_view(row, services.avatar_jobs, base))


@router.post("/api/open/v3/avatar/create", summary="Create a streaming avatar from a photo or video URL")
async def create_avatar(body: AvatarCreate, principal: Auth, services: ServicesDep, request: Request) -> Any:
    """Answers at once (status 1); the avatar is built in the background: poll the detail until status 3."""
    await check_url(body.url, allow_private=services.settings.allow_private_urls)  # refused at once, not later
    jobs = services.avatar_jobs
    row = jobs.new_row(
        owner_id=principal.key_id,
        avatar_id=body.avatar_id,
        name=body.name,
        source=body.url,
        url_from=body.url_from,
        gender=body.gender or "",
        voice_id=body.voice_id,
        framing=body.framing,
    )
    await jobs.create(row)
    return ok(custom_view(row, jobs, base_url(request, services)))


@router.post(UPLOAD_PATH, summary="Create a streaming avatar from an uploaded photo or video (liveavatar extension)")
async def upload_avatar(
    principal: Auth,
    services: ServicesDep,
    request: Request,
    avatar_id: Annotated[str, Form(pattern=r"^[a-zA-Z0-9]+$", min_length=1, max_length=64)],
    name: Annotated[str, Form(min_length=1, max_length=100)],
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo, or MP4, WebM or MOV video, up to 100 MB")],
    gender: Annotated[Literal["male", "female"] | None, Form()] = None,
    voice_id: Annotated[str | None, Form(max_length=100)] = None,
    framing: Annotated[Literal["presenter", "original"], Form()] = "presenter",
) -> Any:
    """Like create, with the file in the request (multipart/form-data) instead of a URL."""
    data = await file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise ParamError(f"{file.filename!r} is larger than {UPLOAD_MAX_BYTES} bytes")
    if not data:
        raise ParamError("the uploaded file is empty")
    jobs = services.avatar_jobs
    row = jobs.new_row(
        owner_id=principal.key_id,
        avatar_id=avatar_id,
        name=name,
        source=f"upload:{(file.filename or 'file')[:200]}",
        gender=gender or "",
        voice_id=voice_id or None,
        framing=framing,
    )
    await jobs.create(row, data)
    return ok(custom_view(row, jobs, base_url(request, services)))


@router.post("/api/open/v3/avatar/delete", summary="Delete one of the caller's avatars (liveavatar extension)")
async def delete_avatar(body: AvatarRef, principal: Auth, services: ServicesDep) -> Any:
    if services.avatars.official(body.avatar_id) is not None:
        raise NoPermission(f"{body.avatar_id!r} is a built-in avatar")
    if not await services.avatar_jobs.delete(body.avatar_id, principal.key_id):
        raise NotFound(f"avatar {body.avatar_id!r} does not exist")
    return ok(None)


@router.get("/avatars/{key}/{kind}.jpg", include_in_schema=False)
async def avatar_image(key: str, kind: Literal["preview", "thumbnail"], services: ServicesDep) -> Any:
    path = services.avatars.preview(key, kind)
    if path is None:
        raise NotFound(f"avatar {key!r} does not exist")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=60"})


def voice_view(voice: Voice) -> dict[str, Any]:
    """The voice object of the voice list API."""
    return {
        "_id": voice.voice_id,
        "voice_id": voice.voice_id,
        "name": voice.name,
        "gender": voice.gender,
        "language": voice.language,
        "locale": voice.locale,
        "preview": "",
        "support_stream": 1,
        "type": 2,
        "engine": voice.engine,
    }


@router.get("/api/open/v4/voice/list", summary="Installed voices")
async def list_voices(
    _principal: Auth,
    services: ServicesDep,
    type: Annotated[int | None, Query(ge=1, le=2)] = None,
    page: Page = 1,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
    name: Annotated[str | None, Query(max_length=100)] = None,
    gender: Annotated[str | None, Query(max_length=16)] = None,
    support_stream: Annotated[int | None, Query(ge=0, le=1)] = None,
) -> Any:
    # Every installed voice is built in (type 2) and streams; cloned voices (type 1) do not exist here.
    voices = [] if type == 1 or support_stream == 0 else services.voices.list(name=name, gender=gender or None)
    result = [voice_view(voice) for voice in voices[(page - 1) * size : page * size]]
    return ok({"result": result, "count": len(voices), "page": page, "size": size})


@router.get("/api/open/v3/language/list", summary="Languages the installed voices speak")
async def list_languages(_principal: Auth, services: ServicesDep) -> Any:
    langs = [{"lang_code": code, "lang_name": name, "url": ""} for code, name in services.voices.languages()]
    return ok({"lang_list": langs})
