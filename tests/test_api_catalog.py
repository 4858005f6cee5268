"""Avatars, voices and languages come from registries of what is installed."""

from __future__ import annotations

import cv2
import httpx
import numpy as np

from conftest import Deployment


def test_builtin_avatars_with_previews(deployment: Deployment) -> None:
    reply = deployment.alice.get("/api/open/v4/liveAvatar/avatar/list")
    assert reply["code"] == 1000
    data = reply["data"]
    ids = {a["avatar_id"]: a for a in data["result"]}
    assert data["count"] == len(ids) == 2
    assert set(ids) == {"astronaut", "grace_hopper"}
    for avatar in ids.values():
        assert avatar["type"] == 2 and avatar["from"] == 2 and avatar["available"] is True
        assert avatar["gender"] == "female"
        for field, side in (("url", 512), ("thumbnailUrl", 160)):
            image = httpx.get(avatar[field])
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            pixels = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
            assert pixels.shape == (side, side, 3) and pixels.std() > 20
    detail = deployment.alice.get("/api/open/v4/liveAvatar/avatar/detail", avatar_id="grace_hopper")
    assert detail["code"] == 1000 and detail["data"]["name"] == "Grace"
    assert deployment.alice.get("/api/open/v4/liveAvatar/avatar/detail", avatar_id="nope")["code"] == 1008
    assert httpx.get(deployment.server.url + "/avatars/nope/preview.jpg").json()["code"] == 1008
    page = deployment.alice.get("/api/open/v4/liveAvatar/avatar/list", page=2, size=1)["data"]
    assert page["count"] == 2 and len(page["result"]) == 1
    assert deployment.alice.get("/api/open/v4/liveAvatar/avatar/list", size=101)["code"] == 1003


def test_voices_and_languages_list_what_is_installed(deployment: Deployment) -> None:
    voices = deployment.alice.get("/api/open/v4/voice/list", size=1000)
    assert voices["code"] == 1000
    data = voices["data"]
    assert data["count"] == len(data["result"]) > 1
    for voice in data["result"]:
        assert {"_id", "voice_id", "gender", "language", "locale", "name", "preview", "support_stream"} <= set(voice)
    languages = deployment.alice.get("/api/open/v3/language/list")["data"]["lang_list"]
    codes = {lang["lang_code"] for lang in languages}
    assert {"en", "de"} <= codes and any(code.startswith("fr") for code in codes)
    assert codes == {voice["language"] for voice in data["result"]}
    assert deployment.alice.get("/api/open/v4/voice/list", type=1)["data"]["count"] == 0
    english = deployment.alice.get("/api/open/v4/voice/list", name="joe")["data"]["result"]
    assert english and all("joe" in v["name"].lower() for v in english)
    first = data["result"][0]
    session = deployment.alice.create_session(voice_id=first["voice_id"], language=first["language"])
    assert session["voice_id"] == first["voice_id"]
