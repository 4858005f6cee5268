"""POST /v3/getToken: trade an API key (client secret) for a long-lived Bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from liveavatar.api.auth import ServicesDep, resolve_key
from liveavatar.api.schemas import TokenRequest
from liveavatar.errors import Code

router = APIRouter(tags=["auth"])


@router.post("/api/open/v3/getToken", summary="Get a Bearer token for an API key")
async def get_token(body: TokenRequest, services: ServicesDep) -> Any:
    key = await resolve_key(services, None, body.clientSecret)
    services.limiter.check(key.id)
    ttl = services.settings.api_token_ttl_days * 86_400
    # The token sits at the top level, as the original API returns it.
    return {"code": int(Code.OK), "msg": "OK", "token": services.signer.sign(str(key.id), "api", ttl)}
