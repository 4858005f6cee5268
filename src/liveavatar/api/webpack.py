"""GET /api/open/v3/avatar/web-pack/{avatar_id}: what a browser needs to draw the avatar (liveavatar extension)."""

from __future__ import annotations

import asyncio
import gzip
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response

from liveavatar.api.auth import ServicesDep, resolve_key, usable
from liveavatar.errors import AuthInvalid, NotFound
from liveavatar.render.webpack import WEB_PACK_PATH, WebPackFile, ensure_web_pack
from liveavatar.services import Services

router = APIRouter(tags=["catalog"])
CACHE_CONTROL = "private, max-age=300"
"""Custom avatars are their owner's: shared caches must not keep them; browsers revalidate with the ETag."""
MEDIA_TYPE = "application/vnd.liveavatar.web-pack"


async def _owner(services: Services, request: Request) -> int:
    """The key the request acts as: an API key or API token, or a session's join token (the browser's)."""
    authorization = request.headers.get("authorization")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            key = await resolve_key(services, authorization, None)
        except AuthInvalid:
            claims = services.signer.verify(token.strip(), "join")  # AuthInvalid again when it is neither
            row = await services.store.sessions.get(claims.subject)
            if row is None:
                raise
            key = usable(await services.store.keys.get(row.owner_id))
    else:
        key = await resolve_key(services, authorization, request.headers.get("x-api-key"))
    services.limiter.check(key.id)
    return key.id


async def _file(services: Services, key: str) -> WebPackFile:
    registry = services.avatars
    pack = await asyncio.to_thread(registry.pack, key)
    return await asyncio.to_thread(ensure_web_pack, pack, registry.pack_path(key))


@router.get(WEB_PACK_PATH, summary="The avatar's web pack, for rendering in the browser (liveavatar extension)")
async def web_pack(
    avatar_id: Annotated[str, Path(pattern=r"^[a-zA-Z0-9_]+$", max_length=64)],
    services: ServicesDep,
    request: Request,
) -> Any:
    """Built-in avatars for every caller, custom ones for their owner; ETag, 304 on If-None-Match."""
    owner = await _owner(services, request)
    avatar = services.avatars.get(avatar_id, owner)
    if avatar is None:
        raise NotFound(f"avatar {avatar_id!r} does not exist")
    found = await _file(services, avatar.pack_key)
    headers = {"ETag": found.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization, X-Api-Key, Accept-Encoding"}
    tags = {t.strip().removeprefix("W/") for t in (request.headers.get("if-none-match") or "").split(",")}
    if found.etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    if "gzip" in (request.headers.get("accept-encoding") or "").lower():
        return FileResponse(found.path, media_type=MEDIA_TYPE, headers={**headers, "Content-Encoding": "gzip"})
    data = await asyncio.to_thread(lambda: gzip.decompress(found.path.read_bytes()))
    return Response(data, media_type=MEDIA_TYPE, headers=headers)
