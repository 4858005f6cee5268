"""Who is calling: API key or Bearer token, with the spec's precedence and codes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from liveavatar.errors import AccountBanned, AuthInvalid, AuthMissing
from liveavatar.security import hash_key
from liveavatar.services import Services
from liveavatar.store.models import ApiKey

log = logging.getLogger(__name__)
REVOCATION_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """The API key a request acts as; every object it touches is scoped to `key_id`."""

    key_id: int
    name: str


def get_services(request: Request) -> Services:
    """The process-wide services the app was built with."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def usable(key: ApiKey | None) -> ApiKey:
    """The key when it may act; AuthInvalid when missing or revoked, AccountBanned when disabled."""
    if key is None or key.revoked_at is not None:
        raise AuthInvalid
    if key.disabled:
        raise AccountBanned
    return key


async def resolve_key(services: Services, authorization: str | None, api_key: str | None) -> ApiKey:
    """The key behind the request's headers: Bearer wins over x-api-key when both are present."""
    if authorization and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthInvalid("authorization header must be 'Bearer <token>'")
        claims = services.signer.verify(token.strip(), "api")
        if not claims.subject.isdigit():
            raise AuthInvalid
        return usable(await services.store.keys.get(int(claims.subject)))
    if api_key and api_key.strip():
        return usable(await services.store.keys.by_hash(hash_key(api_key.strip())))
    raise AuthMissing


async def authenticate(request: Request, services: ServicesDep) -> Principal:
    """FastAPI dependency: authenticate, then apply the per-key rate limit."""
    key = await resolve_key(services, request.headers.get("authorization"), request.headers.get("x-api-key"))
    services.limiter.check(key.id)
    return Principal(key_id=key.id, name=key.name)


Auth = Annotated[Principal, Depends(authenticate)]


async def close_sessions_of_blocked_keys(services: Services) -> int:
    """Close every live session whose key was revoked or disabled (status 3, the reason), wherever it runs."""
    blocked = await services.store.keys.blocked_live_sessions()
    for session_id, reason in blocked:
        log.info("closing session %s: %s", session_id, reason)
        await services.director.close(session_id, reason)
    return len(blocked)


async def enforce_revocations(services: Services, interval: float = REVOCATION_POLL_SECONDS) -> None:
    """Run for the server's life: a key revoked or disabled anywhere (the CLI writes the database from
    another process) has its live sessions closed within `interval` seconds."""
    while True:
        try:
            await close_sessions_of_blocked_keys(services)
        except Exception:
            log.exception("closing the sessions of revoked keys failed; retrying")
        await asyncio.sleep(interval)
