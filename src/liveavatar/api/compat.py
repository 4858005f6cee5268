"""Browser-facing leniency of the original API: cross-origin calls, and JSON bodies sent without a JSON type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

ALLOWED_HEADERS = ("x-api-key", "authorization", "content-type")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = b"application/json"
LENIENT_TYPES = frozenset({b"text/plain", b"application/x-www-form-urlencoded"})


class LenientJsonMiddleware:
    """Reads a body sent with no content type, as `text/plain` or as a urlencoded form, as JSON.

    A browser's `fetch(url, {body: JSON.stringify(...)})` without a `Content-Type` header sends
    `text/plain;charset=UTF-8` (the integration guide's close sample does exactly this); `curl -d '{...}'`
    sends `application/x-www-form-urlencoded`. Only the header is rewritten: a body that is not JSON still
    fails validation with 1003 (no route takes a urlencoded form), and every other content type
    (multipart uploads, `application/*+json`) is left alone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in BODY_METHODS:
            headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
            types = [value for name, value in headers if name == b"content-type"]
            if not types or (len(types) == 1 and _is_plain_text(types[0])):
                kept = [(name, value) for name, value in headers if name != b"content-type"]
                scope = {**scope, "headers": [*kept, (b"content-type", JSON)]}
        await self.app(scope, receive, send)


def _is_plain_text(value: bytes) -> bool:
    return value.split(b";", 1)[0].strip().lower() in LENIENT_TYPES


def cors_options(origins: Sequence[str]) -> dict[str, Any]:
    """CORSMiddleware options for every route (REST, WebRTC offer, the web clients); no credentials."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": list(ALLOWED_HEADERS),
        # API keys and join tokens travel in headers, never in cookies: a wildcard origin stays safe.
        "allow_credentials": False,
        "max_age": 600,
    }
