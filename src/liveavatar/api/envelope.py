"""The response envelope `{code, msg, data}` and the handlers that turn every failure into one."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from liveavatar.errors import Code, LiveAvatarError

log = logging.getLogger(__name__)


class EnvelopeResponse(JSONResponse):
    """JSON as FastAPI writes it, except that text which cannot be UTF-8 is escaped instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # A lone surrogate stored before the edge refused them: \uXXXX escapes are valid JSON.
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def ok(data: Any = None) -> dict[str, Any]:
    """A success envelope; `data` is always present (null when empty), as clients require."""
    return {"code": int(Code.OK), "msg": "OK", "data": data}


def error_response(code: Code | int, msg: str) -> JSONResponse:
    """An error envelope, HTTP 200 as the API does it (clients check `code`)."""
    return EnvelopeResponse({"code": int(code), "msg": msg, "data": None})


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line for the first validation problem."""
    errors = exc.errors()
    if not errors:
        return "parameter error"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "malformed JSON body"
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query"))
    message = str(first.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LiveAvatarError)
    return error_response(exc.code, exc.msg)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(Code.PARAM_ERROR, describe_validation(exc))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(Code.PARAM_ERROR, f"method {request.method} is not allowed on {request.url.path}")
    if exc.status_code == 404:
        response = error_response(Code.NOT_FOUND, f"no such endpoint: {request.url.path}")
        if not request.url.path.startswith("/api/"):
            response.status_code = 404
        return response
    return error_response(Code.PARAM_ERROR, str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    """Map project errors, validation errors and routing errors to envelopes."""
    app.add_exception_handler(LiveAvatarError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)


class BodyTooLarge(Exception):
    """Raised inside `receive` when a request body passes the limit."""


class GuardMiddleware:
    """Outermost ASGI layer: caps request bodies and turns any unhandled error into an envelope."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, large_bodies: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.large_bodies = large_bodies or {}
        """Paths that take bigger bodies (file uploads) and their own limits."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.startswith("/api/") and path.endswith("/"):
            # The routes have no trailing slash; serve them rather than redirect (a 307 loses POST bodies
            # with many clients, and its empty body is no envelope).
            scope = {**scope, "path": path.rstrip("/"), "raw_path": (scope.get("raw_path") or b"/").rstrip(b"/")}
        problem = _url_problem(scope)
        if problem is not None:
            await _send_json(send, _error_bytes(Code.PARAM_ERROR, problem))
            return
        limit = self.large_bodies.get(scope.get("path", ""), self.max_body_bytes)
        too_large = _error_bytes(Code.PARAM_ERROR, f"request body too large (limit {limit} bytes)")
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_json(send, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, too_large)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, _error_bytes(Code.PROCESSING_ERROR, "internal server error"))


def _url_problem(scope: Scope) -> str | None:
    """Why the request's path or query string is not valid UTF-8 text (None when it is)."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    for what, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        try:
            unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return f"the {what} is not valid UTF-8"
    return None


def _error_bytes(code: Code, msg: str) -> bytes:
    return json.dumps({"code": int(code), "msg": msg, "data": None}).encode()


async def _send_json(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
