"""The REST half of the Python client: sessions and catalog, with the API's envelope checked."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from liveavatar.errors import Code


class ApiError(Exception):
    """The server answered with a code other than 1000."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def unwrap(body: Any) -> Any:
    """The `data` of a success envelope; ApiError for any other answer."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), int):
        raise ApiError(0, f"not an API envelope: {str(body)[:200]}")
    if body["code"] != Code.OK:
        raise ApiError(body["code"], str(body.get("msg", "")))
    return body.get("data")


class LiveAvatarApi:
    """Async REST client: `async with LiveAvatarApi(url, api_key=...) as api: await api.create_session(...)`."""

    def __init__(self, base_url: str, *, api_key: str | None = None, token: str | None = None) -> None:
        headers = {}
        if api_key:
            headers["x-api-key"] = api_key
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=30.0)

    async def __aenter__(self) -> LiveAvatarApi:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def _get(self, path: str, **params: Any) -> Any:
        response = await self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        return unwrap(response.json())

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return unwrap((await self._http.post(path, json=body)).json())

    async def create_session(self, avatar_id: str, **params: Any) -> dict[str, Any]:
        """Create a session (`duration`, `mode_type`, `voice_id`, `language`, ... as the API takes them)."""
        session: dict[str, Any] = await self._post(
            "/api/open/v4/liveAvatar/session/create", {"avatar_id": avatar_id, **params}
        )
        return session

    async def session(self, session_id: str) -> dict[str, Any]:
        """A session's detail."""
        detail: dict[str, Any] = await self._get("/api/open/v4/liveAvatar/session/detail", id=session_id)
        return detail

    async def close_session(self, session_id: str) -> dict[str, Any]:
        """Close a session (idempotent)."""
        closed: dict[str, Any] = await self._post("/api/open/v4/liveAvatar/session/close", {"id": session_id})
        return closed

    async def transcript(self, session_id: str) -> dict[str, Any]:
        """What was said in a live session: the client's messages, what the user heard of each reply, barge-ins."""
        said: dict[str, Any] = await self._get("/api/open/v4/liveAvatar/session/transcript", id=session_id)
        return said

    async def avatars(self) -> list[dict[str, Any]]:
        """Installed avatars."""
        result: list[dict[str, Any]] = (await self._get("/api/open/v4/liveAvatar/avatar/list"))["result"]
        return result

    async def voices(self, **filters: Any) -> list[dict[str, Any]]:
        """Installed voices (filters: `name`, `gender`)."""
        result: list[dict[str, Any]] = (await self._get("/api/open/v4/voice/list", size=1000, **filters))["result"]
        return result

    async def languages(self) -> list[dict[str, Any]]:
        """Languages the voices speak."""
        result: list[dict[str, Any]] = (await self._get("/api/open/v3/language/list"))["lang_list"]
        return result
