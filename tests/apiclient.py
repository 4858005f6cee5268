"""A tiny synchronous client for the REST API, for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Api:
    """Calls one server with one set of credentials; returns the parsed envelope."""

    base: str
    key: str | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        """Auth headers for this client."""
        headers = {}
        if self.key is not None:
            headers["x-api-key"] = self.key
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request; asserts HTTP 200 and a well-formed envelope."""
        response = httpx.request(method, self.base + path, headers=self.headers(), timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("code"), int), body
        return body

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET with query parameters."""
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        """POST a JSON body."""
        return self.call("POST", path, json=body)

    def create_session(self, **body: Any) -> dict[str, Any]:
        """Create a session (astronaut avatar unless given); returns the session object."""
        body.setdefault("avatar_id", "astronaut")
        reply = self.post("/api/open/v4/liveAvatar/session/create", body)
        assert reply["code"] == 1000, reply
        session: dict[str, Any] = reply["data"]
        return session

    def session(self, session_id: str) -> dict[str, Any]:
        """The session's detail envelope."""
        return self.get("/api/open/v4/liveAvatar/session/detail", id=session_id)

    def close_session(self, session_id: str) -> dict[str, Any]:
        """Close a session."""
        return self.post("/api/open/v4/liveAvatar/session/close", {"id": session_id})
