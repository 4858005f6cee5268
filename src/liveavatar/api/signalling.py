"""WebRTC signalling: the client's offer in, the server's answer out (non-trickle ICE)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from liveavatar.api.auth import ServicesDep, usable
from liveavatar.api.envelope import ok
from liveavatar.api.schemas import Offer
from liveavatar.errors import AuthInvalid, AuthMissing

router = APIRouter(tags=["webrtc"])


@router.post("/api/open/v4/liveAvatar/webrtc/{session_id}/offer", summary="Join a session over WebRTC")
async def offer(session_id: str, body: Offer, services: ServicesDep, request: Request) -> Any:
    """Authorised by the session's join token (`Authorization: Bearer <webrtc_token>`)."""
    scheme, _, token = (request.headers.get("authorization") or "").strip().partition(" ")
    if not token.strip():
        raise AuthMissing("join with 'Authorization: Bearer <webrtc_token>'")
    if scheme.lower() != "bearer":
        raise AuthInvalid("authorization header must be 'Bearer <webrtc_token>'")
    claims = services.signer.verify(token.strip(), "join")
    if claims.subject != session_id:
        raise AuthInvalid("this join token belongs to another session")
    # A join token stops with its key: revoked (1101) or disabled (1200) since the token was issued.
    row = await services.store.sessions.get(session_id)
    if row is not None:
        usable(await services.store.keys.get(row.owner_id))
    answer = await services.director.join(session_id, body.sdp)
    return ok({"sdp": answer, "type": "answer"})
