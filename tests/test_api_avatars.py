"""Custom avatars through the API against real servers: built in the background from a photo or video URL."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest

from apiclient import Api
from conftest import Deployment
from liveavatar.client import Connection
from liveavatar.render.avatars import builtin_portraits
from liveavatar.render.detection import face_meshes
from liveavatar.render.pack import AvatarPack
from servers import Server, create_key, serve_folder

CREATE = "/api/open/v3/avatar/create"
DETAIL = "/api/open/v4/liveAvatar/avatar/detail"
LIST = "/api/open/v4/liveAvatar/avatar/list"
DELETE = "/api/open/v3/avatar/delete"
UPLOAD = "/api/open/v3/avatar/upload"
SESSION = "/api/open/v4/liveAvatar/session/create"
LOOPBACK = ["127.0.0.1"]
PRIVATE_OK = {"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true"}


def portrait(avatar_id: str) -> np.ndarray[Any, Any]:
    """A built-in portrait as a BGR image."""
    _, _, path = builtin_portraits()[avatar_id]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def clip_from(image: np.ndarray[Any, Any], seconds: float = 3.0, turn_at: float | None = None) -> bytes:
    """An MP4 (PyAV, H.264) of the portrait with known motion: a small sway; turned away from `turn_at` on."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * 25)):
            t = i / 25
            if turn_at is not None and t >= turn_at:  # squeezed sideways: reads as a face turned away, or none
                frame = cv2.resize(cv2.resize(image, (w // 3, h)), (w, h))
            else:
                shift = np.float32([[1, 0, 8 * np.sin(2 * np.pi * t / 2)], [0, 1, 3 * np.sin(2 * np.pi * t / 3)]])
                frame = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="bgr24")
            for packet in stream.encode(video):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static file server on loopback: (base URL, folder it serves)."""
    folder = tmp_path_factory.mktemp("served")
    cv2.imwrite(str(folder / "eileen.png"), portrait("astronaut"))
    cv2.imwrite(str(folder / "grace.jpg"), portrait("grace_hopper"))
    cv2.imwrite(str(folder / "wall.png"), np.full((600, 600, 3), 140, np.uint8))
    (folder / "notes.txt").write_text("not a picture")
    (folder / "grace.mp4").write_bytes(clip_from(portrait("grace_hopper")))
    (folder / "long.mp4").write_bytes(clip_from(portrait("astronaut"), seconds=8.0))
    with serve_folder(folder) as url:
        yield url, folder


@pytest.fixture(scope="module")
def private_ok(make_server: Callable[..., Server]) -> Deployment:
    """A server that may fetch from loopback (where the test files are served)."""
    server = make_server(env=PRIVATE_OK)
    server.start()
    return Deployment(server)


def wait_for(api: Api, avatar_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 240) -> dict[str, Any]:
    """Poll the avatar's detail until `done` holds; the last detail."""
    deadline = time.monotonic() + timeout
    while True:
        reply = api.get(DETAIL, avatar_id=avatar_id)
        assert reply["code"] == 1000, reply
        if done(reply["data"]) or time.monotonic() > deadline:
            return dict(reply["data"])
        time.sleep(0.1)


def finished(avatar: dict[str, Any]) -> bool:
    return avatar["status"] in (3, 4)


def face_in_session(server: Server, api: Api, avatar_id: str) -> int:
    """Start a session with the avatar, receive its video; the number of faces found in a received frame."""

    async def run() -> int:
        reply = api.post(SESSION, {"avatar_id": avatar_id})
        assert reply["code"] == 1000, reply
        conn = await Connection.join(reply["data"]["credentials"], ice_hosts=LOOPBACK)
        try:
            frame = None
            for _ in range(10):  # a few frames in: past the first keyframe's softness
                frame = await asyncio.wait_for(conn.video.get(), 10)
            assert frame is not None
            image = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
            return len(face_meshes(image))
        finally:
            await conn.aclose()
            api.post("/api/open/v4/liveAvatar/session/close", {"id": reply["data"]["_id"]})

    return asyncio.run(run())


def test_photo_url_builds_in_the_background_and_only_its_owner_sees_and_uses_it(
    private_ok: Deployment, files: tuple[str, Path]
) -> None:
    base, _ = files
    alice, bob = private_ok.alice, private_ok.bob
    created = alice.post(CREATE, {"url": f"{base}/eileen.png", "avatar_id": "eileen", "name": "Eileen", "type": 2})
    assert created["code"] == 1000, created
    avatar = created["data"]
    assert avatar["status"] in (1, 2) and avatar["from"] == 3 and avatar["avatar_id"] == "eileen"
    assert avatar["available"] is False and avatar["voice_id"]
    early = alice.post(SESSION, {"avatar_id": "eileen"})
    if early["code"] == 1000:  # this machine was quick: it was ready already
        alice.post("/api/open/v4/liveAvatar/session/close", {"id": early["data"]["_id"]})
    else:
        assert early["code"] == 1218 and "being built" in early["msg"], early

    ready = wait_for(alice, "eileen", finished)
    assert ready["status"] == 3 and ready["available"] is True, ready
    assert ready["progress"] == 1.0 and ready["msg"] == ""
    preview = httpx.get(ready["url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    listed = alice.get(LIST)["data"]
    assert "eileen" in {a["avatar_id"] for a in listed["result"]} and listed["count"] == len(listed["result"])

    # another key neither sees nor uses it, and may use the same id for its own avatar
    assert "eileen" not in {a["avatar_id"] for a in bob.get(LIST)["data"]["result"]}
    assert bob.get(DETAIL, avatar_id="eileen")["code"] == 1008
    assert bob.post(SESSION, {"avatar_id": "eileen"})["code"] == 1008
    assert bob.post(DELETE, {"avatar_id": "eileen"})["code"] == 1008

    assert face_in_session(private_ok.server, alice, "eileen") == 1


def test_video_url_builds_a_loop_avatar(private_ok: Deployment, files: tuple[str, Path]) -> None:
    base, _ = files
    alice = private_ok.alice
    body = {"url": f"{base}/grace.mp4", "avatar_id": "gracevideo", "name": "Grace", "type": 2, "url_from": 1}
    assert alice.post(CREATE, body)["code"] == 1000
    ready = wait_for(alice, "gracevideo", finished)
    assert ready["status"] == 3, ready
    assert "video loop of 3.0 s" in ready["msg"] and "the mouth is modelled on the frame at" in ready["msg"], ready
    (path,) = Path(private_ok.server.env["LIVEAVATAR_PACK_DIR"]).glob(f"{ready['_id']}-*.npz")
    pack = AvatarPack.load(path)
    assert pack.kind == "loop" and pack.loop is not None and len(pack.loop.frames) == 75
    assert (private_ok.server.data_dir / "avatars" / "custom" / ready["_id"] / "clip").is_file()  # for rebuilds
    assert face_in_session(private_ok.server, alice, "gracevideo") == 1
    # browsers draw photo avatars only: a client-rendered session with a video avatar is refused up front
    refused = alice.post(SESSION, {"avatar_id": "gracevideo", "render": "client"})
    assert refused["code"] == 1003 and "video" in refused["msg"], refused


def test_failures_end_at_status_4_with_a_plain_reason(private_ok: Deployment, files: tuple[str, Path]) -> None:
    base, _ = files
    alice = private_ok.alice
    cases = {
        "wall": (f"{base}/wall.png", "no face"),
        "notes": (f"{base}/notes.txt", "not an image or a video"),
        "missing": (f"{base}/missing.png", "404"),
    }
    for avatar_id, (url, _) in cases.items():
        assert alice.post(CREATE, {"url": url, "avatar_id": avatar_id, "name": avatar_id, "type": 2})["code"] == 1000
    for avatar_id, (_, reason) in cases.items():
        failed = wait_for(alice, avatar_id, finished)
        assert failed["status"] == 4 and failed["available"] is False, failed
        assert reason in failed["msg"], failed
        refused = alice.post(SESSION, {"avatar_id": avatar_id})
        assert refused["code"] == 1218 and "could not be built" in refused["msg"]


def test_duplicate_ids_and_bad_bodies(private_ok: Deployment, files: tuple[str, Path]) -> None:
    base, _ = files
    alice, bob = private_ok.alice, private_ok.bob
    body = {"url": f"{base}/wall.png", "avatar_id": "twin", "name": "Twin", "type": 2}
    assert alice.post(CREATE, body)["code"] == 1000
    assert alice.post(CREATE, body)["code"] == 1222
    assert bob.post(CREATE, body)["code"] == 1000  # ids are per key
    assert alice.post(CREATE, {**body, "avatar_id": "astronaut"})["code"] == 1222  # a built-in's id
    for bad in ({**body, "avatar_id": "with_underscore"}, {**body, "url": "ftp://x/y.png"}, {**body, "type": 1}):
        assert alice.post(CREATE, {**bad, "name": "x"})["code"] == 1003
    assert alice.post(CREATE, {**body, "avatar_id": "v", "voice_id": "nobody"})["code"] == 1008
    assert bob.post(DELETE, {"avatar_id": "twin"})["code"] == 1000
    assert alice.get(DETAIL, avatar_id="twin")["code"] == 1000  # alice's twin is untouched
    assert alice.post(DELETE, {"avatar_id": "astronaut"})["code"] == 1009


def test_upload_then_delete(private_ok: Deployment, files: tuple[str, Path]) -> None:
    _, folder = files
    alice = private_ok.alice
    with (folder / "grace.jpg").open("rb") as handle:
        reply = alice.call(
            "POST",
            UPLOAD,
            data={"avatar_id": "uploaded", "name": "Uploaded", "gender": "female", "framing": "original"},
            files={"file": ("grace.jpg", handle, "image/jpeg")},
        )
    assert reply["code"] == 1000, reply
    assert reply["data"]["gender"] == "female" and reply["data"]["voice_id"] and reply["data"]["framing"] == "original"
    ready = wait_for(alice, "uploaded", finished)
    assert ready["status"] == 3, ready
    pack_files = list(private_ok.server.data_dir.glob(f"avatars/custom/{ready['_id']}/*"))
    assert pack_files
    assert alice.post(DELETE, {"avatar_id": "uploaded"})["code"] == 1000
    assert alice.get(DETAIL, avatar_id="uploaded")["code"] == 1008
    assert alice.post(SESSION, {"avatar_id": "uploaded"})["code"] == 1008
    assert not any(path.exists() for path in pack_files)
    assert httpx.get(ready["url"]).json()["code"] == 1008


def test_private_urls_are_refused_by_default(deployment: Deployment, files: tuple[str, Path]) -> None:
    base, _ = files
    reply = deployment.alice.post(CREATE, {"url": f"{base}/eileen.png", "avatar_id": "local", "name": "L", "type": 2})
    assert reply["code"] == 1003 and "LIVEAVATAR_ALLOW_PRIVATE_URLS" in reply["msg"], reply
    assert deployment.alice.get(DETAIL, avatar_id="local")["code"] == 1008


def test_a_restart_mid_build_resumes_it(make_server: Callable[..., Server], files: tuple[str, Path]) -> None:
    base, _ = files
    server = make_server(env=PRIVATE_OK)
    server.start()
    alice = Api(server.url, key=create_key(server.data_dir, "alice", server.env))
    body = {"url": f"{base}/long.mp4", "avatar_id": "resumed", "name": "Resumed", "type": 2}
    assert alice.post(CREATE, body)["code"] == 1000
    building = wait_for(alice, "resumed", lambda a: a["status"] != 1, timeout=60)
    assert building["status"] == 2, building
    assert server.stop(signal.SIGKILL) == -9
    server.start()
    ready = wait_for(alice, "resumed", finished)
    assert ready["status"] == 3, ready
    assert "resuming the build of avatar 'resumed'" in server.log()
    assert face_in_session(server, alice, "resumed") == 1


def test_builtin_avatars_speak_with_a_voice_of_their_gender(deployment: Deployment) -> None:
    alice = deployment.alice
    voices = {v["voice_id"]: v for v in alice.get("/api/open/v4/voice/list", size=1000)["data"]["result"]}
    builtin = [avatar for avatar in alice.get(LIST)["data"]["result"] if avatar["from"] == 2]
    assert {avatar["avatar_id"] for avatar in builtin} == {"astronaut", "grace_hopper"}
    for avatar in builtin:
        assert avatar["gender"] == "female" and voices[avatar["voice_id"]]["gender"] == "female", avatar
        assert voices[avatar["voice_id"]]["language"].startswith("en")
        assert alice.get(DETAIL, avatar_id=avatar["avatar_id"])["data"]["voice_id"] == avatar["voice_id"]


def test_sessions_in_a_worker_process_use_custom_avatars(
    make_server: Callable[..., Server], files: tuple[str, Path]
) -> None:
    base, _ = files
    server = make_server(env=PRIVATE_OK, args=("--workers", "1"))
    server.start()
    alice = Api(server.url, key=create_key(server.data_dir, "alice", server.env))
    body = {"url": f"{base}/eileen.png", "avatar_id": "inworker", "name": "W", "type": 2}
    assert alice.post(CREATE, body)["code"] == 1000
    assert wait_for(alice, "inworker", finished)["status"] == 3
    assert face_in_session(server, alice, "inworker") == 1  # the worker found the pack on disk
