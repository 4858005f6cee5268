"""Catalog routes: avatars (with public preview images), voices, languages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from liveavatar.api.auth import Auth, ServicesDep
from liveavatar.api.envelope import ok
from liveavatar.api.sessions import base_url
from liveavatar.errors import NotFound
from liveavatar.speech.base import Voice

router = APIRouter(tags=["catalog"])
Page = Annotated[int, Query(ge=1, le=1_000_000)]


@router.get("/api/open/v4/liveAvatar/avatar/list", summary="Installed avatars")
async def list_avatars(
    _principal: Auth,
    services: ServicesDep,
    request: Request,
    page: Page = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 100,
) -> Any:
    avatars = services.avatars.list()
    base = base_url(request, services)
    result = [avatar.to_api(base) for avatar in avatars[(page - 1) * size : page * size]]
    return ok({"count": len(avatars), "page": page, "size": size, "result": result})


@router.get("/api/open/v4/liveAvatar/avatar/detail", summary="One avatar")
async def avatar_detail(
    _principal: Auth, services: ServicesDep, request: Request, avatar_id: Annotated[str, Query(min_length=1)]
) -> Any:
    avatar = services.avatars.get(avatar_id)
    if avatar is None:
        raise NotFound(f"avatar {avatar_id!r} does not exist")
    return ok(avatar.to_api(base_url(request, services)))


@router.get("/avatars/{avatar_id}/{kind}.jpg", include_in_schema=False)
async def avatar_image(avatar_id: str, kind: Literal["preview", "thumbnail"], services: ServicesDep) -> Any:
    path = services.avatars.preview(avatar_id, kind)
    if path is None:
        raise NotFound(f"avatar {avatar_id!r} does not exist")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})


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
