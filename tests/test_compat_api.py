"""What AKool client code needs from the REST API: CORS, lenient JSON bodies, provider-shaped credentials."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest

from conftest import Deployment
from servers import Server, create_key

CREATE = "/api/open/v4/liveAvatar/session/create"
CLOSE = "/api/open/v4/liveAvatar/session/close"
PAGE = "http://app.example.com:3000"


@pytest.fixture(scope="module")
def backend() -> str:
    """Nothing here depends on storage: SQLite only."""
    return "sqlite"


def _preflight(url: str, method: str, headers: str, origin: str = PAGE) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": headers,
        },
    )


def test_preflights_allow_the_api_and_the_offer_from_any_origin(deployment: Deployment) -> None:
    base = deployment.server.url
    session = deployment.alice.create_session()
    for url, headers in (
        (base + CREATE, "x-api-key,content-type"),
        (base + CREATE, "authorization,content-type"),
        (session["credentials"]["webrtc_url"], "authorization,content-type"),
    ):
        reply = _preflight(url, "POST", headers)
        assert reply.status_code in (200, 204), reply.text
        assert reply.headers["access-control-allow-origin"] == "*"
        allowed = {h.strip().lower() for h in reply.headers["access-control-allow-headers"].split(",")}
        assert {"x-api-key", "authorization", "content-type"} <= allowed
        assert "POST" in reply.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in reply.headers

    # The actual replies carry the header too, errors included (the page must be able to read the code).
    reply = httpx.get(f"{base}/api/open/v4/liveAvatar/avatar/list", headers={"origin": PAGE})
    assert reply.headers["access-control-allow-origin"] == "*" and reply.json()["code"] == 1102
    module = httpx.get(f"{base}/web/compat/agora.js", headers={"origin": PAGE})  # cross-origin ES module import
    assert module.status_code == 200 and module.headers["access-control-allow-origin"] == "*"


def test_cors_origins_setting_limits_who_may_call(make_server: Callable[..., Server]) -> None:
    server = make_server(env={"LIVEAVATAR_CORS_ORIGINS": f"{PAGE}, https://other.example"}).start()
    url = server.url + CREATE
    allowed = _preflight(url, "POST", "x-api-key,content-type")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == PAGE
    other = _preflight(url, "POST", "x-api-key", origin="https://other.example")
    assert other.headers["access-control-allow-origin"] == "https://other.example"
    refused = _preflight(url, "POST", "x-api-key", origin="https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    simple = httpx.get(f"{server.url}/healthz", headers={"origin": "https://evil.example"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_json_bodies_without_a_json_content_type_are_read_as_json(deployment: Deployment) -> None:
    base, key = deployment.server.url, deployment.alice.key or ""
    body = json.dumps({"avatar_id": "astronaut", "duration": 60}).encode()
    for content_type in ("text/plain;charset=UTF-8", "text/plain", "application/x-www-form-urlencoded", None):
        headers = {"x-api-key": key} | ({"content-type": content_type} if content_type else {})
        created = httpx.post(base + CREATE, content=body, headers=headers).json()
        assert created["code"] == 1000, (content_type, created)
        assert created["data"]["duration"] == 60
        # The integration guide's close sample: fetch(url, {headers: {'x-api-key'}, body: JSON.stringify({id})}).
        closed = httpx.post(
            base + CLOSE, content=json.dumps({"id": created["data"]["_id"]}).encode(), headers=headers
        ).json()
        assert closed["code"] == 1000 and closed["data"]["status"] == 3, closed

    for junk in (b"avatar_id=astronaut", b"{not json", b"\xff\xfe"):
        reply = httpx.post(base + CREATE, content=junk, headers={"x-api-key": key, "content-type": "text/plain"})
        assert reply.json()["code"] == 1003, (junk, reply.text)
    # A real form is not JSON (and multipart keeps its meaning for the upload routes).
    form = httpx.post(base + CREATE, data={"avatar_id": "astronaut"}, headers={"x-api-key": key})
    assert form.json()["code"] == 1003


def _ice(url: str) -> list[dict[str, object]]:
    fragment = httpx.URL(url).fragment
    assert fragment.startswith("ice="), url
    encoded = fragment[len("ice=") :]
    return list(json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))))


def test_credentials_carry_liveavatars_fields_and_the_providers(deployment: Deployment) -> None:
    base = deployment.server.url
    default = deployment.alice.create_session()
    assert default["stream_type"] == "agora"
    sessions = {
        kind: deployment.alice.create_session(stream_type=kind) for kind in ("agora", "livekit", "trtc", "webrtc")
    }
    for kind, session in sessions.items():
        creds, sid = session["credentials"], session["_id"]
        assert session["stream_type"] == kind
        assert creds["webrtc_url"] == f"{base}/api/open/v4/liveAvatar/webrtc/{sid}/offer"
        assert creds["webrtc_token"].count(".") == 2 and creds["ice_servers"] == []
        detail = deployment.alice.session(sid)["data"]
        assert detail["stream_type"] == kind and set(detail["credentials"]) == set(creds)

    agora = sessions["agora"]["credentials"]
    assert set(agora) - {"webrtc_url", "webrtc_token", "ice_servers"} == {
        "agora_app_id",
        "agora_channel",
        "agora_token",
        "agora_uid",
    }
    assert agora["agora_app_id"] == base and agora["agora_channel"] == sessions["agora"]["_id"]
    assert agora["agora_token"] == agora["webrtc_token"]
    assert isinstance(agora["agora_uid"], int) and agora["agora_uid"] > 1

    livekit = sessions["livekit"]["credentials"]
    assert livekit["livekit_url"] == base and livekit["livekit_token"] == livekit["webrtc_token"]
    assert livekit["livekit_room_name"] == sessions["livekit"]["_id"]
    assert livekit["livekit_server_identity"] != livekit["livekit_client_identity"]

    trtc = sessions["trtc"]["credentials"]
    for prefix in ("trtc_sdk_", "trtc_"):  # the API reference's spelling and the public demo's
        assert trtc[prefix + "app_id"] == base and trtc[prefix + "room_id"] == sessions["trtc"]["_id"]
        assert trtc[prefix + "user_sig"] == trtc["webrtc_token"] and trtc[prefix + "user_id"]

    assert set(sessions["webrtc"]["credentials"]) == {"webrtc_url", "webrtc_token", "ice_servers"}
    closed = deployment.alice.close_session(sessions["agora"]["_id"])["data"]
    assert closed["credentials"] == {} and closed["stream_type"] == "agora"


def test_provider_urls_carry_the_ice_servers(make_server: Callable[..., Server]) -> None:
    ice = [{"urls": ["turn:turn.example.com:3478"], "username": "u", "credential": "p"}]
    server = make_server(env={"LIVEAVATAR_ICE_SERVERS": json.dumps(ice)}).start()
    key = create_key(server.data_dir, "carol", server.env)
    for kind, field in (("agora", "agora_app_id"), ("livekit", "livekit_url"), ("trtc", "trtc_sdk_app_id")):
        reply = httpx.post(
            server.url + CREATE, json={"avatar_id": "astronaut", "stream_type": kind}, headers={"x-api-key": key}
        ).json()
        creds = reply["data"]["credentials"]
        assert creds["ice_servers"] == ice
        assert creds[field].startswith(server.url + "#") and _ice(creds[field]) == ice
