"""The real-time half of the Python client: join a session over WebRTC, talk on the data channel, get media."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import av
import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from liveavatar.client.rest import unwrap
from liveavatar.protocol import PROFILES, ChatStream, encode
from liveavatar.protocol.animation import ANIMATION_LABEL, Animation, AnimationError, Cut, Frames, Hello, decode
from liveavatar.render.face import FaceState
from liveavatar.transport.ice import advertise_hosts, rtc_configuration

T = TypeVar("T")
Message = dict[str, Any]
FACES_KEPT = 25 * 120
"""Face states kept by position (two minutes at 25 fps); older ones are forgotten."""


class Latest(asyncio.Queue[T]):
    """A bounded queue that drops the oldest item when full (media the caller does not read never piles up)."""

    def put_latest(self, item: T) -> None:
        """Add `item`, dropping the oldest one if the queue is full."""
        if self.full():
            self.get_nowait()
        self.put_nowait(item)


class Connection:
    """A joined session: send chat and commands, await acks, read messages, audio and video frames."""

    def __init__(self, pc: RTCPeerConnection, profile: str, *, animation: bool = False) -> None:
        self.pc = pc
        self.profile = PROFILES[profile]
        self.channel = pc.createDataChannel("stream-messages", ordered=True)
        self.animation: Latest[tuple[float, Animation]] = Latest(maxsize=1000)
        """Animation stream messages with their arrival (event-loop time), when joined with `animation=True`."""
        self.hello: Hello | None = None
        """The animation stream's latest HELLO."""
        self.faces: dict[int, FaceState] = {}
        """The face to draw at each audio position (CUTs applied), for a client-rendered session."""
        if animation:
            pc.createDataChannel(ANIMATION_LABEL, ordered=True).on("message", self._on_animation)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        """Every message from the server, in order (acks included)."""
        self.video: Latest[av.VideoFrame] = Latest(maxsize=50)
        self.audio: Latest[av.AudioFrame] = Latest(maxsize=500)
        self.first_video_at: float | None = None
        """Event-loop time the first video frame was decoded."""
        self.audio_until = 0
        """The audio received so far ends here (pts + samples: aiortc counts from its first packet, which in a
        first join is the session's audio position 0; compare with the animation stream's positions)."""
        self._acks: dict[str, asyncio.Future[Message]] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self.channel.on("message", self._on_message)
        pc.on("track", self._on_track)

    @classmethod
    async def join(
        cls,
        credentials: dict[str, Any],
        *,
        microphone: MediaStreamTrack | None = None,
        camera: MediaStreamTrack | None = None,
        profile: str = "webrtc",
        ice_hosts: Sequence[str] | None = None,
        timeout: float = 20.0,
        render: str = "server",
    ) -> Connection:
        """Join with a session's credentials (`webrtc_url`, `webrtc_token`, `ice_servers`).

        `render="client"` joins a client-rendered session: no video is offered (unless a camera is sent)
        and the animation channel is opened (`animation`, `faces`, `hello`).
        """
        if ice_hosts is not None:
            advertise_hosts(ice_hosts)
        pc = RTCPeerConnection(rtc_configuration(credentials.get("ice_servers") or []))
        connection = cls(pc, profile, animation=render == "client")
        try:
            if microphone is not None:
                pc.addTransceiver(microphone, direction="sendrecv")
            else:
                pc.addTransceiver("audio", direction="recvonly")
            # The camera shares the avatar video's m-line (sendrecv): one video transceiver each way.
            if camera is not None:
                pc.addTransceiver(camera, direction="sendrecv")
            elif render != "client":
                pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
            async with httpx.AsyncClient(timeout=timeout) as http:
                response = await http.post(
                    credentials["webrtc_url"],
                    json={"sdp": pc.localDescription.sdp, "type": "offer"},
                    headers={"authorization": f"Bearer {credentials['webrtc_token']}"},
                )
            answer = unwrap(response.json())
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            await asyncio.wait_for(connection._channel_open(), timeout)
        except BaseException:
            await connection.aclose()
            raise
        return connection

    async def _channel_open(self) -> None:
        if self.channel.readyState != "open":
            opened = asyncio.Event()
            self.channel.on("open", opened.set)
            await opened.wait()

    # --- data channel ----------------------------------------------------------------------------

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "command":
            future = self._acks.pop(str(message.get("mid")), None)
            if future is not None and not future.done():
                future.set_result(message)
        self.messages.put_nowait(message)

    def _on_animation(self, raw: str | bytes) -> None:
        if not isinstance(raw, bytes):
            return
        try:
            message = decode(raw)
        except AnimationError:
            return
        if isinstance(message, Hello):
            self.hello = message
        elif isinstance(message, Frames):
            for position, state in zip(message.positions(), message.states, strict=True):
                self.faces[position] = state
            while len(self.faces) > FACES_KEPT:
                del self.faces[next(iter(self.faces))]
        elif isinstance(message, Cut):
            for position in [p for p in self.faces if p >= message.position]:
                del self.faces[position]
        self.animation.put_latest((asyncio.get_running_loop().time(), message))

    def send_raw(self, text: str) -> None:
        """Send one message exactly as given (for protocol tests)."""
        self.channel.send(text)

    def send_chat(self, text: str, *, mid: str | None = None) -> str:
        """Send a chat message, chunked to the transport profile; returns its mid."""
        stream = ChatStream(mid or secrets.token_hex(8), "user", self.profile)
        for chunk in stream.piece(text, last=True):
            self.channel.send(chunk)
        return stream.mid

    async def command(self, cmd: str, data: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Message:
        """Send a command and wait for its ack (the whole ack message; `["pld"]["code"]` 1000 = done)."""
        mid = secrets.token_hex(8)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        pld: dict[str, Any] = {"cmd": cmd}
        if data is not None:
            pld["data"] = data
        self.channel.send(encode({"v": 2, "type": "command", "mid": mid, "pld": pld}))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(mid, None)

    async def interrupt(self) -> Message:
        """Stop the avatar's current reply."""
        return await self.command("interrupt")

    async def set_params(self, **data: Any) -> Message:
        """Change session settings live (`lang`, `mode`, `bgurl`, `vparams`)."""
        return await self.command("set-params", data)

    async def set_action(self, action: str | None = None, expression: str | None = None) -> Message:
        """Play a gesture and/or show an expression."""
        data = {key: value for key, value in (("action", action), ("expression", expression)) if value}
        return await self.command("set-action", data)

    async def next_message(self, match: Callable[[Message], bool] = lambda _m: True, timeout: float = 10.0) -> Message:
        """The next message from the server that `match`es (others are skipped)."""

        async def find() -> Message:
            while True:
                message = await self.messages.get()
                if match(message):
                    return message

        return await asyncio.wait_for(find(), timeout)

    async def bot_reply(self, timeout: float = 30.0) -> str:
        """The text of the avatar's next answer, joined from its chunks until `fin`."""
        parts: dict[int, str] = {}
        while True:
            message = await self.next_message(
                lambda m: m.get("type") == "chat" and m.get("pld", {}).get("from") == "bot", timeout
            )
            parts[int(message["idx"])] = message["pld"]["text"]
            if message.get("fin"):
                return "".join(parts[i] for i in sorted(parts))

    # --- media ---------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._read(track), name=f"client-{track.kind}")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    if self.first_video_at is None:
                        self.first_video_at = asyncio.get_running_loop().time()
                    self.video.put_latest(frame)
                elif isinstance(frame, av.AudioFrame):
                    self.audio_until = max(self.audio_until, int(frame.pts or 0) + frame.samples)
                    self.audio.put_latest(frame)

    async def video_frames(self) -> AsyncIterator[av.VideoFrame]:
        """Decoded video frames as they arrive (the latest 50 are kept when not read)."""
        while True:
            yield await self.video.get()

    async def animation_messages(self) -> AsyncIterator[tuple[float, Animation]]:
        """Animation stream messages (HELLO, FRAMES, CUT) with their arrival time, as they come."""
        while True:
            yield await self.animation.get()

    async def audio_frames(self) -> AsyncIterator[av.AudioFrame]:
        """Decoded audio frames (48 kHz) as they arrive (the latest 10 s are kept when not read)."""
        while True:
            yield await self.audio.get()

    async def aclose(self) -> None:
        """Leave the session (the server closes it unless the client rejoins within its grace period)."""
        for task in list(self._readers):
            task.cancel()
        for future in self._acks.values():
            future.cancel()
        await self.pc.close()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
