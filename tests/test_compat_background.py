"""A video `background_url` / `bgurl` (MP4, WebM) plays as a looping background, within size and length limits."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import av
import numpy as np
import pytest

from conftest import Deployment
from liveavatar.client import Connection, LiveAvatarApi
from liveavatar.errors import ParamError
from liveavatar.render.background import VIDEO_FPS, Background, is_video
from servers import Server, serve_folder

LOOPBACK = ["127.0.0.1"]
RED, BLUE = (230, 20, 20), (20, 20, 230)  # RGB


def clip(
    seconds: float, *, size: tuple[int, int] = (320, 180), fps: int = 25, fmt: str = "mp4", period: float = 0.4
) -> bytes:
    """A video whose whole picture turns red and blue every `period` / 2 seconds (PyAV, in memory)."""
    codec = {"mp4": "h264", "webm": "libvpx"}[fmt]
    out_buffer = io.BytesIO()
    with av.open(out_buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * fps)):
            colour = RED if (i / fps) % period < period / 2 else BLUE
            image = np.empty((size[1], size[0], 3), np.uint8)
            image[:] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return out_buffer.getvalue()


def test_video_bytes_become_a_compact_looping_frame_list() -> None:
    for fmt in ("mp4", "webm"):
        data = clip(2.0, fmt=fmt)
        assert is_video(data)
        bg = Background.from_bytes(data)
        assert bg.is_video and bg.is_image
        assert abs(bg.frame_count - 2.0 * VIDEO_FPS) <= 1 and abs(bg.duration - 2.0) <= 0.1
        # Frames kept small (JPEG at most 512 on the short side), and they loop.
        assert bg.still(0).frame(512, 512).shape == (512, 512, 3)
        assert bg.frame_index(0.0) == 0 and bg.frame_index(bg.duration + 0.01) == 0
        reds = [bg.still(bg.frame_index(t)).frame(64, 64)[..., 2].mean() > 150 for t in np.arange(0, 2.0, 0.08)]
        assert any(reds) and not all(reds), reds  # the colours alternate


def test_video_limits() -> None:
    with pytest.raises(ParamError, match="longer than 30 s"):
        Background.from_bytes(clip(32.0, size=(64, 64), fps=1))
    with pytest.raises(ParamError, match="too large"):
        Background.from_bytes(clip(0.2, size=(2560, 64)))
    with pytest.raises(ParamError, match="could not be decoded|no frames|no video"):
        Background.from_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(ParamError, match="larger than"):
        Background.from_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * (17 * 1024 * 1024))


@pytest.fixture(scope="module")
def backend() -> str:
    """SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Background videos served over HTTP on loopback; the base URL."""
    root = tmp_path_factory.mktemp("videos")
    (root / "loop.mp4").write_bytes(clip(2.0, fmt="mp4"))
    (root / "loop.webm").write_bytes(clip(1.0, fmt="webm", period=0.2))
    (root / "long.mp4").write_bytes(clip(40.0, size=(64, 64), fps=1))

    with serve_folder(root) as url:
        yield url


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A server allowed to fetch from loopback (where the test serves its videos)."""
    return Deployment(make_server(env={"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true"}).start())


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[LiveAvatarApi]:
    """A REST client with alice's key."""
    async with LiveAvatarApi(deployment.server.url, api_key=deployment.alice.key) as client:
        yield client


async def corner_colours(conn: Connection, frames: int) -> list[str]:
    """'red', 'blue' or 'other' for the top-left corner of the next `frames` video frames."""
    out = []
    for _ in range(frames):
        image = (await asyncio.wait_for(conn.video.get(), 5)).to_ndarray(format="rgb24")
        r, _g, b = image[:24, :24].reshape(-1, 3).mean(0)
        out.append("red" if r > 150 and b < 100 else "blue" if b > 150 and r < 100 else "other")
    return out


async def test_a_video_background_loops_behind_the_avatar(api: LiveAvatarApi, files: str) -> None:
    session = await api.create_session("astronaut", background_url=f"{files}/loop.mp4", stream_type="webrtc")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK)
    try:
        seen: list[str] = []
        for _ in range(60):  # the fetch and decode happen after the join: wait for the video to show
            seen = await corner_colours(conn, 25)
            if "red" in seen and "blue" in seen:
                break
        # 0.2 s of red, 0.2 s of blue: one second shows both, in runs of about five frames.
        assert seen.count("red") >= 5 and seen.count("blue") >= 5, seen
        runs = [len(list(group)) for _, group in itertools.groupby(seen)]
        assert max(runs) <= 12, seen  # it moves: no colour holds for half a second

        # set-params switches to another video (WebM); a video over the limits is refused with 1003.
        ack = await conn.command("set-params", {"bgurl": f"{files}/loop.webm"}, timeout=30)
        assert ack["pld"]["code"] == 1000, ack
        refused = await conn.command("set-params", {"bgurl": f"{files}/long.mp4"}, timeout=30)
        assert refused["pld"]["code"] == 1003 and "30 s" in refused["pld"]["msg"], refused
        seen = await corner_colours(conn, 25)
        assert "red" in seen and "blue" in seen, seen  # the WebM still plays
    finally:
        await conn.aclose()
