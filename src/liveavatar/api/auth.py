"""Who is calling: API key or Bearer token, with the spec's precedence and codes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from liveavatar.errors import AccountBanned, AuthInvalid, AuthMissing
from liveavatar.security import hash_key
from liveavatar.services import Services
from liveavatar.store.models import ApiKey


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


def _usable(key: ApiKey | None) -> ApiKey:
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
        return _usable(await services.store.keys.get(int(claims.subject)))
    if api_key and api_key.strip():
        return _usable(await services.store.keys.by_hash(hash_key(api_key.strip())))
    raise AuthMissing


async def authenticate(request: Request, services: ServicesDep) -> Principal:
    """FastAPI dependency: authenticate, then apply the per-key rate limit."""
    key = await resolve_key(services, request.headers.get("authorization"), request.headers.get("x-api-key"))
    services.limiter.check(key.id)
    return Principal(key_id=key.id, name=key.name)


Auth = Annotated[Principal, Depends(authenticate)]
