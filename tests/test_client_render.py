"""Client-rendered sessions end to end: a real server and aiortc client; audio and the animation stream, no video."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from conftest import LOOPBACK, wait_until
from liveavatar.client import ApiError, Connection, LiveAvatarApi
from liveavatar.media import AUDIO_RATE
from liveavatar.protocol.animation import ANIMATION_LABEL, Animation, Cut, Frames, Hello
from liveavatar.transport.ice import advertise_hosts
from servers import serve_folder

BACKENDS = ("sqlite",)  # the stream does not depend on storage
SERVER_ARGS = ("--max-sessions", "8", "--workers", "1")
"""Sessions run in a worker process: the render option travels there in the session spec."""
SERVER_ENV = {"LIVEAVATAR_ALLOW_PRIVATE_URLS": "true"}  # the background is served on loopback
FRAME = AUDIO_RATE // 25
LEAD = int(0.1 * AUDIO_RATE)
TEXT = "Hello there. I am drawn by your browser, and the server only sends my voice and a few numbers."


@dataclass
class Capture:
    """What the client received: audio (position, rms) and animation messages with the audio heard by then."""

    audio: list[tuple[int, float]] = field(default_factory=list)
    messages: list[tuple[int, Animation]] = field(default_factory=list)
    """Each animation message with the end position of the audio received when it arrived."""

    def heard_until(self) -> int:
        return self.audio[-1][0] + 960 if self.audio else 0


async def capture(conn: Connection, rec: Capture) -> None:
    async def audio() -> None:
        while True:
            frame = await conn.audio.get()
            samples = frame.to_ndarray().astype(np.float64)
            # aiortc numbers received audio from the first packet: in a first join that is position 0
            rec.audio.append((int(frame.pts), float(np.sqrt(np.mean(np.square(samples))))))

    async def animation() -> None:
        while True:
            _, message = await conn.animation.get()
            rec.messages.append((rec.heard_until(), message))

    await asyncio.gather(audio(), animation())


@contextlib.asynccontextmanager
async def recording(api: LiveAvatarApi, session: dict[str, Any], conn: Connection) -> AsyncIterator[Capture]:
    """Capture what `conn` receives; on the way out, stop, leave the peer and close the session."""
    rec = Capture()
    recorder = asyncio.create_task(capture(conn, rec))
    try:
        yield rec
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        await conn.aclose()
        await api.close_session(session["_id"])


async def join(api: LiveAvatarApi, **params: Any) -> tuple[dict[str, Any], Connection]:
    session = await api.create_session("astronaut", render="client", **params)
    conn = await Connection.join(session["credentials"], ice_hosts=LOOPBACK, render="client")
    return session, conn


def first_rtp_received(conn: Connection) -> int:
    """The RTP timestamp of the first audio packet the client received (aiortc keeps it to itself)."""
    (receiver,) = [r for r in conn.pc.getReceivers() if r.track.kind == "audio"]
    origin = receiver._RTCRtpReceiver__timestamp_mapper._origin  # type: ignore[attr-defined]
    assert isinstance(origin, int)
    return origin


async def test_render_is_a_session_option_echoed_in_detail(api: LiveAvatarApi) -> None:
    session = await api.create_session("astronaut", render="client")
    assert session["render"] == "client"
    assert (await api.session(session["_id"]))["render"] == "client"
    plain = await api.create_session("astronaut")
    assert plain["render"] == "server"
    with pytest.raises(ApiError) as refused:
        await api.create_session("astronaut", render="gpu")
    assert refused.value.code == 1003
    for s in (session, plain):
        await api.close_session(s["_id"])


async def test_a_client_rendered_session_speaks_with_a_face_stream_and_no_video(api: LiveAvatarApi) -> None:
    session, conn = await join(api)
    async with recording(api, session, conn) as rec:
        await wait_until(lambda: len(rec.audio) >= 25, timeout=15, what="half a second of audio")
        conn.send_chat(TEXT)
        await conn.next_message(lambda m: m.get("pld", {}).get("event") == "audio_end", timeout=60)
        end = rec.heard_until()
        await wait_until(lambda: rec.heard_until() >= end + AUDIO_RATE // 2, timeout=10, what="0.5 s more audio")
        rtp_origin = first_rtp_received(conn)

    # no video: none offered, none answered, none received
    assert conn.video.empty() and conn.first_video_at is None
    assert all(t.receiver.track.kind == "audio" for t in conn.pc.getTransceivers())

    hellos = [m for _, m in rec.messages if isinstance(m, Hello)]
    assert hellos and isinstance(rec.messages[0][1], Hello)
    hello = hellos[0]
    assert (hello.fps, hello.width, hello.height) == (25, 512, 512)
    assert hello.info["avatar_id"] == "astronaut" and hello.info["rtp_known"] is True
    # rtp_base maps the first packet (position 0 of a first join) to its RTP timestamp
    assert (rtp_origin - hello.rtp_base) % (1 << 32) == 0

    # positions run on the frame grid without gaps, restarting only where a CUT said; ahead of the audio
    expected: int | None = None
    leads = []
    for heard, message in rec.messages:
        if isinstance(message, Cut):
            assert message.position % FRAME == 0
            assert expected is not None and message.position < expected
            expected = message.position
        elif isinstance(message, Frames):
            assert message.first_position % FRAME == 0
            assert expected is None or message.first_position == expected
            expected = message.positions()[-1] + FRAME
            leads.append(message.first_position - heard)
    assert len(leads) > 20
    assert min(leads) >= 0, "a batch arrived after its audio"
    assert np.median(leads) >= LEAD

    # the mouth opens while the audio is loud, and is closed in the silences
    positions = np.array([p for p, _ in rec.audio])
    loud = np.array([r for _, r in rec.audio])
    faces = conn.faces
    frames = positions - positions % FRAME
    opening = np.array([float(faces[f].mouth.sum()) if f in faces else np.nan for f in frames])
    known = ~np.isnan(opening)
    assert known.mean() > 0.9
    speaking = loud > loud.max() * 0.1
    assert speaking.mean() > 0.2
    assert np.nanmean(opening[speaking & known]) > 3 * np.nanmean(opening[~speaking & known]) + 0.05
    # and it moves with the sound: the best lag between openness and loudness is within 40 ms
    grid = known
    a = (loud[grid] - loud[grid].mean()) / loud[grid].std()
    v = (opening[grid] - opening[grid].mean()) / opening[grid].std()
    lags = list(range(-10, 11))  # +-200 ms in 20 ms steps
    scores = [float(np.mean(a[max(0, -k) : len(a) - max(0, k)] * v[max(0, k) : len(v) - max(0, -k)])) for k in lags]
    best = lags[int(np.argmax(scores))]
    assert abs(best * 20) <= 40, (best * 20, max(scores))


async def test_a_rejoined_client_gets_the_rtp_base_of_its_new_tracks(api: LiveAvatarApi) -> None:
    """A rejoin's tracks start where the session clock is, not at 0: rtp_base still maps packets to positions."""
    session, conn = await join(api)
    try:
        await wait_until(lambda: conn.hello is not None, timeout=15, what="HELLO")
        await asyncio.sleep(2.0)  # the session clock runs on
    finally:
        await conn.aclose()

    async def rejoin() -> Connection | None:
        try:
            credentials = (await api.session(session["_id"]))["credentials"]
            return await Connection.join(credentials, ice_hosts=LOOPBACK, render="client")
        except ApiError as refused:  # until the server has seen the drop, the old peer still holds the session
            assert refused.code == 1009, refused
            return None

    again = await wait_until(rejoin, timeout=10, interval=0.2, what="a rejoin once the server saw the drop")
    async with recording(api, session, again) as rec:
        await wait_until(
            lambda: rec.audio and any(isinstance(m, Frames) for _, m in rec.messages),
            timeout=15,
            what="audio and frames on the rejoin",
        )
        rtp_first = first_rtp_received(again)
    hello = next(m for _, m in rec.messages if isinstance(m, Hello))
    frames = next(m for _, m in rec.messages if isinstance(m, Frames))
    position = (rtp_first - hello.rtp_base) % (1 << 32)  # of the first packet the new peer received
    assert position >= 2 * AUDIO_RATE, (position, frames.first_position)
    # the faces start at the sound being handed out when the stream began, a few packets after the first
    assert 0 <= frames.first_position - position < AUDIO_RATE // 2, (position, frames.first_position)


async def test_interrupt_cuts_the_stream_and_the_mouth_closes(api: LiveAvatarApi) -> None:
    session, conn = await join(api)
    async with recording(api, session, conn) as rec:
        await wait_until(lambda: conn.hello is not None, timeout=15, what="HELLO")
        conn.send_chat(TEXT + " " + TEXT)
        await wait_until(
            lambda: sum(1 for _, r in rec.audio[-25:] if r > 300) > 10, timeout=30, what="the avatar speaking"
        )
        sent = len(rec.messages)
        ack = await conn.interrupt()
        assert ack["pld"]["code"] == 1000
        heard = rec.heard_until()
        await wait_until(lambda: rec.heard_until() >= heard + AUDIO_RATE, timeout=10, what="1 s more audio")

    cuts = [m for _, m in rec.messages[sent:] if isinstance(m, Cut)]
    assert cuts, "no CUT after the interrupt"
    cut = cuts[0].position
    assert abs(cut - heard) < AUDIO_RATE // 2  # where the sound stopped, give or take the audio in flight
    # after the cut the audio is silent and the mouth eases to rest within 0.3 s
    after = [r for p, r in rec.audio if p >= cut + 0.1 * AUDIO_RATE]
    assert after and max(after) < 50
    settled = [s for p, s in conn.faces.items() if cut + 0.3 * AUDIO_RATE <= p <= cut + 0.8 * AUDIO_RATE]
    assert settled and max(float(s.mouth.sum()) for s in settled) < 0.05


async def test_an_expression_reaches_the_stream_at_once(api: LiveAvatarApi) -> None:
    session, conn = await join(api)
    async with recording(api, session, conn) as rec:
        await wait_until(lambda: len(conn.faces) >= 15, timeout=15, what="frames")
        sent = len(rec.messages)
        heard = rec.heard_until()
        ack = await conn.set_action(expression="happiness")
        assert ack["pld"]["code"] == 1000
        await wait_until(lambda: rec.heard_until() >= heard + AUDIO_RATE, timeout=10, what="1 s more audio")
    cuts = [m for _, m in rec.messages[sent:] if isinstance(m, Cut)]
    assert cuts and cuts[0].position < heard + AUDIO_RATE // 2
    smiles = [s.smile for p, s in conn.faces.items() if heard + 0.6 * AUDIO_RATE <= p <= heard + AUDIO_RATE]
    assert smiles and min(smiles) > 0.3  # the happiness expression has faded in


async def test_an_offered_video_m_line_is_answered_inactive(api: LiveAvatarApi) -> None:
    """A browser that offers recvonly video anyway still joins a client-rendered session: audio, no video."""
    session = await api.create_session("astronaut", render="client")
    advertise_hosts(LOOPBACK)
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("stream-messages")
        pc.createDataChannel(ANIMATION_LABEL)
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        await pc.setLocalDescription(await pc.createOffer())
        credentials = session["credentials"]
        async with httpx.AsyncClient() as http:
            response = await http.post(
                credentials["webrtc_url"],
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
                headers={"authorization": f"Bearer {credentials['webrtc_token']}"},
            )
        answer = response.json()["data"]
        video = answer["sdp"].split("m=video", 1)[1].split("m=", 1)[0]
        assert "a=inactive" in video
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await wait_until(lambda: pc.connectionState == "connected", timeout=15, what="connected")
        (audio,) = [t for t in tracks if t.kind == "audio"]
        frame = await asyncio.wait_for(audio.recv(), 10)
        assert frame.sample_rate == AUDIO_RATE
        assert not [t for t in tracks if t.kind == "video"]
    finally:
        await pc.close()
        await api.close_session(session["_id"])


BROWSER_JOIN = """async ({credentials, label}) => {
    const pc = new RTCPeerConnection({iceServers: []});
    pc.createDataChannel('stream-messages');
    const animation = pc.createDataChannel(label);
    animation.binaryType = 'arraybuffer';
    const types = [];
    let rtpBase = null;
    animation.onmessage = (event) => {
        const bytes = new DataView(event.data);
        types.push(bytes.getUint8(0));
        if (bytes.getUint8(0) === 0) rtpBase = bytes.getUint32(8, true);
    };
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.addTransceiver('video', {direction: 'recvonly'});  // as a page written for server video would
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
        if (pc.iceGatheringState === 'complete') return done();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    });
    const response = await fetch(credentials.webrtc_url, {
        method: 'POST',
        headers: {'content-type': 'application/json', authorization: `Bearer ${credentials.webrtc_token}`},
        body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer'}),
    });
    await pc.setRemoteDescription((await response.json()).data);
    const audio = pc.getReceivers().find((r) => r.track.kind === 'audio');
    const player = new Audio();  // sources are reported for audio that is played out
    player.srcObject = new MediaStream([audio.track]);
    await player.play();
    const counts = async () => {
        const found = {audio: 0, video: 0};
        (await pc.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp') found[s.kind] += s.packetsReceived || 0;
        });
        return found;
    };
    for (let i = 0; i < 150 && ((await counts()).audio < 50 || !types.includes(1)); i++) {
        await new Promise((r) => setTimeout(r, 100));
    }
    const sources = audio.getSynchronizationSources();
    const result = {
        packets: await counts(), types, rtpBase, state: pc.connectionState,
        rtpTimestamp: sources.length ? sources[0].rtpTimestamp : null,
    };
    pc.close();
    return result;
}"""


async def test_a_browser_joins_a_client_rendered_session_and_can_sync_to_its_audio(
    api: LiveAvatarApi, deployment: Any, page: Any
) -> None:
    """Chromium offers audio and recvonly video: it gets audio and the stream, no video; rtp_base maps its playout."""
    session = await api.create_session("astronaut", render="client")
    try:
        await page.goto(deployment.server.url)
        result = await page.evaluate(BROWSER_JOIN, {"credentials": session["credentials"], "label": ANIMATION_LABEL})
    finally:
        await api.close_session(session["_id"])
    assert result["state"] == "connected", result
    assert result["packets"]["audio"] >= 50 and result["packets"]["video"] == 0, result
    assert result["types"][0] == 0 and 1 in result["types"], result  # HELLO first, then FRAMES
    # the audio being played maps to its position: about as far as the packets received reach (a first join
    # starts at position 0), less the jitter buffer
    assert result["rtpTimestamp"] is not None and result["rtpBase"] is not None, result
    position = (result["rtpTimestamp"] - result["rtpBase"]) % (1 << 32)
    assert abs(position - result["packets"]["audio"] * 960) < AUDIO_RATE, (position, result)


async def test_a_background_change_reaches_the_client_in_a_hello(api: LiveAvatarApi, tmp_path: Path) -> None:
    """set-params bgurl: the server checks the image as for video, then tells the client what to draw behind."""
    cv2.imwrite(str(tmp_path / "beach.png"), np.full((90, 160, 3), (200, 160, 90), np.uint8))
    session, conn = await join(api)
    try:
        await wait_until(lambda: conn.hello is not None, timeout=15, what="HELLO")
        assert conn.hello is not None and conn.hello.info["background"] is None
        with serve_folder(tmp_path) as url:
            ack = await conn.set_params(bgurl=f"{url}/beach.png")
        assert ack["pld"]["code"] == 1000, ack
        await wait_until(lambda: conn.hello is not None and conn.hello.info["background"], timeout=10, what="HELLO")
        assert conn.hello.info["background"] == {"url": f"{url}/beach.png", "video": False}
        refused = await conn.set_params(bgurl=f"{url}/missing.png")  # the server is gone now: refused, no HELLO
        assert refused["pld"]["code"] != 1000
        assert conn.hello.info["background"]["url"].endswith("/beach.png")
    finally:
        await conn.aclose()
        await api.close_session(session["_id"])
