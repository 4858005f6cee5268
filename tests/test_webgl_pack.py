"""The web pack (render/webpack.py) and its route: contents, caching on disk, ETag/304, owner scoping, join tokens."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from conftest import Deployment
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.builder import build_pack
from liveavatar.render.pack import MOUTH_FIELDS, AvatarPack
from liveavatar.render.webpack import build_web_pack, ensure_web_pack, read_web_pack, web_pack_path
from servers import serve_folder

BACKENDS = ("sqlite",)  # the route does not depend on storage
SERVER_ENV = {"LIVEAVATAR_ALLOW_PRIVATE_URLS": "1"}  # the custom avatar's photo is served on loopback
WEB_PACK = "/api/open/v3/avatar/web-pack/{}"
UPLOAD = "/api/open/v3/avatar/upload"
DETAIL = "/api/open/v4/liveAvatar/avatar/detail"


@pytest.fixture(scope="module")
def pack() -> AvatarPack:
    name, gender, path = builtin_portraits()["astronaut"]
    return build_pack(cv2.imread(str(path)), avatar_id="astronaut", name=name, gender=gender)


def get(deployment: Deployment, avatar_id: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(deployment.server.url + WEB_PACK.format(avatar_id), headers=headers, timeout=60)


def code(response: httpx.Response) -> int:
    body: dict[str, Any] = response.json()
    return int(body["code"])


def test_web_pack_holds_what_the_browser_draws_from(pack: AvatarPack) -> None:
    header, arrays = read_web_pack(build_web_pack(pack))
    w, h = pack.size
    top, bottom = pack.band
    assert header["size"] == [w, h] and header["band"] == [top, bottom]
    assert arrays["image"].shape == (h, w, 4)
    assert np.array_equal(arrays["image"][..., :3], pack.image[..., ::-1])  # RGB
    assert np.array_equal(arrays["image"][..., 3], pack.alpha)
    assert np.array_equal(arrays["head_weight"], pack.head_weight)
    assert header["mouth"]["names"] == list(MOUTH_FIELDS)
    fields = arrays["mouth_fields"]
    x0, y0, _, _ = header["mouth"]["box"]
    jaw = pack.fields["jaw_open"]
    fy, fx = jaw.y - top - y0, jaw.x - x0
    assert np.array_equal(fields[0, fy : fy + jaw.data.shape[0], fx : fx + jaw.data.shape[1]], jaw.data)
    assert len(header["eyes"]) == len(pack.eyes) and len(header["lips"]["rest"]) == 22
    assert arrays["teeth"].shape == pack.teeth.shape


def test_the_cached_web_pack_is_rebuilt_when_the_pack_changes(pack: AvatarPack, tmp_path: Path) -> None:
    pack_path = tmp_path / "astronaut-abc.npz"
    pack.save(pack_path)
    first = ensure_web_pack(pack, pack_path)
    assert first.path == web_pack_path(pack_path) and first.path.parent == tmp_path
    assert read_web_pack(gzip.decompress(first.path.read_bytes()))[0]["avatar_id"] == "astronaut"
    built = first.path.stat().st_mtime_ns
    assert ensure_web_pack(pack, pack_path).path.stat().st_mtime_ns == built  # cached
    later = time.time() + 5
    os.utime(pack_path, (later, later))  # the pack was rebuilt after the web pack
    again = ensure_web_pack(pack, pack_path)
    assert again.path.stat().st_mtime_ns != built and again.etag == first.etag  # same pack, same bytes


def test_route_serves_built_in_avatars_with_etag_and_304(deployment: Deployment) -> None:
    key = {"x-api-key": deployment.alice.key or ""}
    first = get(deployment, "astronaut", key)
    assert first.status_code == 200, first.text
    assert first.headers["content-encoding"] == "gzip" and first.headers["cache-control"].startswith("private")
    etag = first.headers["etag"]
    header, arrays = read_web_pack(first.content)
    assert header["avatar_id"] == "astronaut" and arrays["image"].shape[2] == 4
    again = get(deployment, "astronaut", {**key, "if-none-match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    plain = get(deployment, "astronaut", {**key, "accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == first.content
    assert get(deployment, "astronaut", {**key, "if-none-match": '"other"'}).status_code == 200
    # bob sees the built-in avatars too; nobody without credentials does
    assert get(deployment, "astronaut", {"x-api-key": deployment.bob.key or ""}).status_code == 200
    assert code(get(deployment, "astronaut", {})) == 1102
    assert code(get(deployment, "astronaut", {"authorization": "Bearer nonsense"})) == 1101
    assert code(get(deployment, "nobody", key)) == 1008


def test_a_session_join_token_is_enough(deployment: Deployment) -> None:
    session = deployment.alice.create_session()
    token = session["credentials"]["webrtc_token"]
    try:
        reply = get(deployment, "astronaut", {"authorization": f"Bearer {token}"})
        assert reply.status_code == 200 and read_web_pack(reply.content)[0]["avatar_id"] == "astronaut"
    finally:
        deployment.alice.close_session(session["_id"])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("photos")
    _, _, path = builtin_portraits()["grace_hopper"]
    cv2.imwrite(str(folder / "grace.jpg"), cv2.imread(str(path)))
    with serve_folder(folder) as url:
        yield url


def test_custom_avatars_only_for_their_owner(deployment: Deployment, photos: str) -> None:
    alice, bob = deployment.alice, deployment.bob
    reply = alice.post(
        "/api/open/v3/avatar/create", {"url": f"{photos}/grace.jpg", "avatar_id": "gracie", "name": "Gracie"}
    )
    assert reply["code"] == 1000, reply
    deadline = time.monotonic() + 240
    while (detail := alice.get(DETAIL, avatar_id="gracie")["data"])["status"] not in (3, 4):
        assert time.monotonic() < deadline, detail
        time.sleep(0.2)
    assert detail["status"] == 3, detail
    mine = get(deployment, "gracie", {"x-api-key": alice.key or ""})
    assert mine.status_code == 200 and read_web_pack(mine.content)[0]["avatar_id"] == "gracie"
    assert code(get(deployment, "gracie", {"x-api-key": bob.key or ""})) == 1008
    session = bob.create_session()
    try:
        bobs = {"authorization": f"Bearer {session['credentials']['webrtc_token']}"}
        assert code(get(deployment, "gracie", bobs)) == 1008
    finally:
        bob.close_session(session["_id"])
    assert alice.post("/api/open/v3/avatar/delete", {"avatar_id": "gracie"})["code"] == 1000
    assert code(get(deployment, "gracie", {"x-api-key": alice.key or ""})) == 1008
