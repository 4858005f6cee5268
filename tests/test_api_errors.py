"""Every malformed request gets a clear envelope, HTTP 200, never a 500."""

from __future__ import annotations

import httpx

from conftest import Deployment

CREATE = "/api/open/v4/liveAvatar/session/create"


def _raw(deployment: Deployment, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, deployment.server.url + path, headers=deployment.alice.headers(), **kwargs)  # type: ignore[arg-type]


def test_malformed_json(deployment: Deployment) -> None:
    for content in (b"{", b"not json", b"[1,2]", b'"text"', b"null", b"\xff\xfe"):
        response = _raw(deployment, "POST", CREATE, content=content)
        assert response.status_code == 200
        body = response.json()
        assert body["code"] == 1003 and body["data"] is None and body["msg"], (content, body)


def test_wrong_method_and_unknown_path(deployment: Deployment) -> None:
    wrong = _raw(deployment, "GET", CREATE)
    assert wrong.status_code == 200 and wrong.json()["code"] == 1003 and "not allowed" in wrong.json()["msg"]
    unknown = _raw(deployment, "GET", "/api/open/v4/nothing/here")
    assert unknown.status_code == 200 and unknown.json()["code"] == 1008


def test_oversize_bodies(deployment: Deployment) -> None:
    big = b'{"avatar_id": "astronaut", "pad": "' + b"x" * (2 << 20) + b'"}'
    response = _raw(deployment, "POST", CREATE, content=big)
    assert response.status_code == 200 and response.json()["code"] == 1003 and "too large" in response.json()["msg"]

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    streamed = _raw(deployment, "POST", CREATE, content=chunks())
    assert streamed.status_code == 200 and streamed.json()["code"] == 1003


def test_wrong_types_in_query(deployment: Deployment) -> None:
    reply = deployment.alice.get("/api/open/v4/liveAvatar/session/list", page="first")
    assert reply["code"] == 1003 and "page" in reply["msg"]
    assert deployment.alice.get("/api/open/v4/liveAvatar/session/detail")["code"] == 1003


def test_openapi_and_docs_are_served(deployment: Deployment) -> None:
    spec = httpx.get(deployment.server.url + "/openapi.json").json()
    assert "/api/open/v4/liveAvatar/session/create" in spec["paths"]
    assert "/api/open/v3/getToken" in spec["paths"]
    assert httpx.get(deployment.server.url + "/docs").status_code == 200
