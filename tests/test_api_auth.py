"""Authentication, tokens, key lifecycle and rate limiting against a real server."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx

from apiclient import Api
from conftest import Deployment
from servers import Server, cli, create_key

AVATARS = "/api/open/v4/liveAvatar/avatar/list"
TOKEN = "/api/open/v3/getToken"


def test_missing_and_invalid_credentials(deployment: Deployment) -> None:
    url = deployment.server.url
    assert deployment.anonymous.get(AVATARS)["code"] == 1102
    assert Api(url, key="").get(AVATARS)["code"] == 1102
    assert Api(url, key="la_not-a-key").get(AVATARS)["code"] == 1101
    assert Api(url, token="not.a.jwt").get(AVATARS)["code"] == 1101
    reply = httpx.get(url + AVATARS, headers={"authorization": "Basic abc"}).json()
    assert reply["code"] == 1101


def test_get_token_and_bearer_precedence(deployment: Deployment) -> None:
    url = deployment.server.url
    reply = deployment.anonymous.post(TOKEN, {"clientId": "my-app", "clientSecret": deployment.alice.key})
    assert reply["code"] == 1000 and isinstance(reply["token"], str)
    token = reply["token"]
    assert Api(url, token=token).get(AVATARS)["code"] == 1000
    # Bearer wins over x-api-key, in both directions.
    assert Api(url, key=deployment.alice.key, token="forged.token.here").get(AVATARS)["code"] == 1101
    assert Api(url, key="la_wrong", token=token).get(AVATARS)["code"] == 1000
    # Objects made with the token belong to the key behind it.
    session = Api(url, token=token).create_session()
    assert deployment.alice.session(session["_id"])["code"] == 1000
    assert deployment.bob.session(session["_id"])["code"] in (1008, 1009)


def test_get_token_rejects_bad_secrets(deployment: Deployment) -> None:
    anonymous = deployment.anonymous
    assert anonymous.post(TOKEN, {"clientId": "x"})["code"] == 1003
    assert anonymous.post(TOKEN, {"clientId": "x", "clientSecret": ""})["code"] == 1003
    assert anonymous.post(TOKEN, {"clientId": "x", "clientSecret": "la_wrong"})["code"] == 1101
    assert anonymous.post(TOKEN, {"clientSecret": 5})["code"] == 1003


def test_revoke_and_disable_take_effect_at_once(make_server: Callable[..., Server]) -> None:
    server = make_server().start()
    key = create_key(server.data_dir, "temp", server.env)
    token = Api(server.url).post(TOKEN, {"clientSecret": key})["token"]
    assert Api(server.url, key=key).get(AVATARS)["code"] == 1000
    cli("keys", "disable", "temp", data_dir=server.data_dir, env=server.env)
    assert Api(server.url, key=key).get(AVATARS)["code"] == 1200
    assert Api(server.url, token=token).get(AVATARS)["code"] == 1200
    cli("keys", "enable", "temp", data_dir=server.data_dir, env=server.env)
    assert Api(server.url, key=key).get(AVATARS)["code"] == 1000
    cli("keys", "revoke", "temp", data_dir=server.data_dir, env=server.env)
    assert Api(server.url, key=key).get(AVATARS)["code"] == 1101
    assert Api(server.url, token=token).get(AVATARS)["code"] == 1101
    listing = cli("keys", "list", data_dir=server.data_dir, env=server.env)
    assert "temp" in listing and "revoked" in listing and key not in listing


def test_keys_are_hashed_at_rest_and_never_logged(make_server: Callable[..., Server], backend: str) -> None:
    server = make_server().start()
    key = create_key(server.data_dir, "secret", server.env)
    api = Api(server.url, key=key)
    api.create_session()
    api.post(TOKEN, {"clientSecret": key})
    server.stop()
    assert key not in server.log()
    if backend == "sqlite":
        with sqlite3.connect(server.data_dir / "liveavatar.db") as db:
            rows = db.execute("select name, prefix, key_hash from api_keys").fetchall()
        assert rows and all(key not in "".join(row) for row in rows)
        assert key.encode() not in (server.data_dir / "liveavatar.db").read_bytes()


def test_rate_limit_answers_1005(make_server: Callable[..., Server]) -> None:
    env = {"LIVEAVATAR_RATE_LIMIT_PER_MINUTE": "6", "LIVEAVATAR_RATE_LIMIT_BURST": "3"}
    server = make_server(env=env).start()
    limited = Api(server.url, key=create_key(server.data_dir, "busy", server.env))
    other = Api(server.url, key=create_key(server.data_dir, "calm", server.env))
    codes = [limited.get(AVATARS)["code"] for _ in range(5)]
    assert codes[:3] == [1000, 1000, 1000] and 1005 in codes[3:]
    assert other.get(AVATARS)["code"] == 1000  # one key's limit never touches another's
