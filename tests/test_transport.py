"""Python client end to end over real WebRTC (aiortc on both sides) against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import LOOPBACK, Deployment, wait_until
from liveavatar.client import ApiError, Connection, LiveAvatarApi
from servers import Server, create_key

BACKENDS = ("sqlite",)  # the transport does not depend on storage
SERVER_ARGS = ("--max-sessions", "64")  # room for every session this module leaves behind


async def _join(api: LiveAvatarApi, **params: Any) -> tuple[dict[str, Any], Connection]:
    session = await api.create_session("astronaut", **params)
    return session, await Connection.join(session["credentials"], ice_hosts=LOOPBACK)


def _is(kind: str, **pld: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == kind and all(m.get("pld", {}).get(k) == v for k, v in pld.items())


async def test_join_streams_video_at_25_fps_and_audio(api: LiveAvatarApi) -> None:
    session, conn = await _join(api)
    try:
        assert (await api.session(session["_id"]))["status"] == 2
        first = await asyncio.wait_for(conn.video.get(), 10)
        assert (first.width, first.height) == (512, 512)
        image = first.to_ndarray(format="bgr24")
        assert image.std() > 20  # the portrait, not a blank frame
        frames = []
        for _ in range(50):
            frames.append(await asyncio.wait_for(conn.video.get(), 5))
        assert all(f.time_base.denominator == 90_000 for f in frames)
        steps = np.diff([f.pts for f in frames])
        assert np.median(steps) == 3600  # 90 kHz / 25 fps
        audio = await asyncio.wait_for(conn.audio.get(), 5)
        assert audio.sample_rate == 48_000 and audio.samples == 960
    finally:
        await conn.aclose()


async def test_received_frame_rate_is_steady(api: LiveAvatarApi) -> None:
    _, conn = await _join(api)
    try:
        await asyncio.wait_for(conn.video.get(), 10)
        while not conn.video.empty():
            conn.video.get_nowait()
        loop = asyncio.get_running_loop()
        start, count = loop.time(), 0
        while loop.time() - start < 2.0:
            await asyncio.wait_for(conn.video.get(), 5)
            count += 1
        assert 40 <= count <= 60, count  # 25 fps over 2 s, with jitter at the edges
    finally:
        await conn.aclose()


async def test_chat_round_trip_in_retelling_mode(api: LiveAvatarApi) -> None:
    _, conn = await _join(api)
    try:
        text = "Hello there. This is liveavatar speaking! Does it work?"
        conn.send_chat(text)
        assert (await conn.next_message(_is("event", event="audio_start")))["pld"]["event"] == "audio_start"
        assert await conn.bot_reply() == text
        await conn.next_message(_is("event", event="audio_end"))
    finally:
        await conn.aclose()


async def test_chunked_chat_on_a_small_transport_profile(api: LiveAvatarApi) -> None:
    session = await api.create_session("astronaut", transport_profile="agora", language="zh")
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, profile="agora")
    try:
        text = "你好世界我们在测试" * 60  # 1.6 KB, one long piece: several 1 KB chunks each way
        conn.send_chat(text)
        sizes: list[int] = []
        parts: list[str] = []
        while len(sizes) < 2:  # the first piece, as it starts playing
            message = await conn.next_message(_is("chat", **{"from": "bot"}), timeout=30)
            sizes.append(len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()))
            parts.append(message["pld"]["text"])
        assert (await conn.interrupt())["pld"]["code"] == 1000
        while not message["fin"]:
            message = await conn.next_message(_is("chat", **{"from": "bot"}), timeout=10)
            parts.append(message["pld"]["text"])
        assert len(parts) >= 2 and max(sizes) <= 1024 and max(sizes) > 900  # full chunks, never over the limit
        assert text.startswith("".join(parts))
        transcript = await api.transcript(session["_id"])
        assert transcript["messages"][0] == {"from": "user", "text": text}  # reassembled exactly
    finally:
        await conn.aclose()


async def test_commands_are_acked_with_the_spec_codes(api: LiveAvatarApi) -> None:
    _, conn = await _join(api)
    try:
        assert (await conn.interrupt())["pld"] == {"cmd": "interrupt", "code": 1000, "msg": "OK"}
        ok = await conn.set_params(lang="de", vparams={"speed": 1.1, "vid": "espeak-de"})
        assert ok["pld"]["code"] == 1000
        bad = await conn.set_params(vparams={"speed": 2})
        assert bad["pld"]["code"] == 1003 and "speed" in bad["pld"]["msg"]
        unknown_voice = await conn.set_params(vparams={"vid": "no-such-voice"})
        assert unknown_voice["pld"]["code"] == 1003 and "voice" in unknown_voice["pld"]["msg"]
        assert (await conn.set_action("nod"))["pld"]["code"] == 1000
        assert (await conn.command("dance"))["pld"]["code"] == 1003
        bad_action = await conn.set_action("moonwalk")
        assert bad_action["pld"]["code"] == 1003 and "action" in bad_action["pld"]["msg"]
    finally:
        await conn.aclose()


async def test_bad_messages_are_answered_and_v1_is_ignored(api: LiveAvatarApi) -> None:
    _, conn = await _join(api)
    try:
        conn.send_raw("{not json")
        error = await conn.next_message(_is("event", event="error"))
        assert error["pld"]["code"] == 1003 and "JSON" in error["pld"]["msg"]
        conn.send_raw(json.dumps({"v": 2, "type": "command", "mid": "m1", "pld": {"data": {}}}))
        ack = await conn.next_message(_is("command"))
        assert ack["mid"] == "m1" and ack["pld"]["code"] == 1003 and "cmd" in ack["pld"]["msg"]
        conn.send_raw(json.dumps({"v": 1, "type": "command", "mid": "old", "pld": {"cmd": "interrupt"}}))
        conn.send_raw(json.dumps({"v": 2, "type": "chat", "mid": "c", "idx": "0", "fin": True, "pld": {"text": "x"}}))
        error = await conn.next_message(_is("event", event="error"))
        assert "idx" in error["pld"]["msg"]
        ping = await conn.interrupt()
        assert ping["pld"]["code"] == 1000
        rest = [conn.messages.get_nowait() for _ in range(conn.messages.qsize())]
        assert rest == [ping]  # the v1 message got no answer at all
    finally:
        await conn.aclose()


async def test_second_join_refused_and_rejoin_after_drop(api: LiveAvatarApi) -> None:
    session, conn = await _join(api)
    try:
        fresh = (await api.session(session["_id"]))["credentials"]
        with pytest.raises(ApiError) as refused:
            await Connection.join(fresh, ice_hosts=LOOPBACK)
        assert refused.value.code == 1009 and "already" in refused.value.msg
    finally:
        await conn.aclose()

    async def rejoin() -> Connection | None:
        try:
            return await Connection.join((await api.session(session["_id"]))["credentials"], ice_hosts=LOOPBACK)
        except ApiError as refused:  # until the server has seen the drop, the old peer still holds the session
            assert refused.code == 1009 and "already" in refused.msg, refused
            return None

    again = await wait_until(rejoin, timeout=10, interval=0.2, what="a rejoin once the server saw the drop")
    try:
        assert (await again.interrupt())["pld"]["code"] == 1000
        await asyncio.wait_for(again.video.get(), 10)
        assert (await api.session(session["_id"]))["status"] == 2
    finally:
        await again.aclose()


async def test_join_errors(api: LiveAvatarApi, deployment: Deployment) -> None:
    first = await api.create_session("astronaut")
    second = await api.create_session("astronaut")
    stolen = {**first["credentials"], "webrtc_token": second["credentials"]["webrtc_token"]}
    with pytest.raises(ApiError) as wrong_token:
        await Connection.join(stolen, ice_hosts=LOOPBACK)
    assert wrong_token.value.code == 1101
    with pytest.raises(ApiError) as forged:
        await Connection.join({**first["credentials"], "webrtc_token": "not-a-token"}, ice_hosts=LOOPBACK)
    assert forged.value.code == 1101
    await api.close_session(first["_id"])
    with pytest.raises(ApiError) as closed:
        await Connection.join(first["credentials"], ice_hosts=LOOPBACK)
    assert closed.value.code == 1219
    async with httpx.AsyncClient() as http:
        response = await http.post(
            second["credentials"]["webrtc_url"],
            json={"sdp": "v=0 garbage", "type": "offer"},
            headers={"authorization": f"Bearer {second['credentials']['webrtc_token']}"},
        )
    bad = response.json()
    assert bad["code"] == 1003 and bad["data"] is None


async def test_server_side_close_ends_the_peer(api: LiveAvatarApi) -> None:
    session, conn = await _join(api)
    try:
        await asyncio.wait_for(conn.video.get(), 10)
        ended = asyncio.Event()
        conn.pc.on("connectionstatechange", lambda: conn.pc.connectionState in ("closed", "failed") and ended.set())
        await api.close_session(session["_id"])
        await asyncio.wait_for(ended.wait(), 10)
        assert (await api.session(session["_id"]))["status"] == 3
    finally:
        await conn.aclose()


async def test_disconnect_and_duration_end_sessions(make_server: Callable[..., Server]) -> None:
    server = make_server(env={"LIVEAVATAR_REJOIN_GRACE": "1"}).start()
    async with LiveAvatarApi(server.url, api_key=create_key(server.data_dir, "k", server.env)) as api:
        dropped, conn = await _join(api)
        other, other_conn = await _join(api, duration=4)
        await conn.aclose()

        async def both_ended() -> bool:
            return all([(await api.session(one["_id"]))["status"] == 3 for one in (dropped, other)])

        # the drop ends its session after the 1 s grace; the other runs out its 4 s
        await wait_until(both_ended, timeout=15, interval=0.2, what="both sessions ended")
        gone = await api.session(dropped["_id"])
        assert gone["status"] == 3 and gone["close_reason"] == "client disconnected"
        # The other session kept streaming until its own duration ran out.
        expired = await api.session(other["_id"])
        assert expired["status"] == 3 and expired["close_reason"] == "duration elapsed"
        assert other_conn.video.qsize() > 25
        await other_conn.aclose()


async def test_microphone_and_camera_reach_the_server(
    api: LiveAvatarApi, deployment: Deployment, tmp_path: Any
) -> None:
    import wave

    from aiortc.mediastreams import VideoStreamTrack

    from liveavatar.client import MicrophoneTrack

    wav = tmp_path / "tone.wav"
    tone = (np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000) * 8000).astype(np.int16)
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(tone.tobytes())
    mic = MicrophoneTrack()
    mic.push_wav(wav)
    session = await api.create_session("astronaut")
    health = deployment.server.url + "/healthz"
    before = (await asyncio.to_thread(httpx.get, health)).json()
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, microphone=mic, camera=VideoStreamTrack())
    try:
        await asyncio.wait_for(mic.drained.wait(), 10)

        async def received() -> dict[str, Any] | None:
            now: dict[str, Any] = (await asyncio.to_thread(httpx.get, health)).json()
            audio = now["inbound_audio_frames"] - before["inbound_audio_frames"]
            return now if audio >= 40 and now["inbound_video_frames"] > before["inbound_video_frames"] else None

        after = await wait_until(received, timeout=10, interval=0.1, what="the microphone's and camera's frames")
        assert after["inbound_audio_frames"] - before["inbound_audio_frames"] >= 40  # 1 s of 20 ms frames
        assert after["inbound_video_frames"] > before["inbound_video_frames"]
        await asyncio.wait_for(conn.video.get(), 10)  # and the avatar still streams to us
    finally:
        await conn.aclose()


async def test_server_shutdown_ends_peers_and_records_failure(make_server: Callable[..., Server]) -> None:
    server = make_server().start()
    async with LiveAvatarApi(server.url, api_key=create_key(server.data_dir, "k", server.env)) as api:
        session, conn = await _join(api)
        ended = asyncio.Event()
        conn.pc.on("connectionstatechange", lambda: conn.pc.connectionState in ("closed", "failed") and ended.set())
        await asyncio.wait_for(conn.video.get(), 10)
        conn.send_chat("A short reply before the server goes down.")
        await conn.bot_reply(timeout=30)
        assert await asyncio.to_thread(server.stop) in (0, -15)  # shut down cleanly on SIGTERM, not killed
        await asyncio.wait_for(ended.wait(), 40)
        await conn.aclose()
        server.start()
        detail = await api.session(session["_id"])
        assert detail["status"] == 4 and detail["close_reason"] == "server shut down"
