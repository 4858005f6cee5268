"""The server side of one client's WebRTC connection: outbound tracks, inbound mic/camera, data channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from liveavatar.errors import ParamError
from liveavatar.media import AUDIO_SAMPLES, Clock
from liveavatar.protocol.animation import ANIMATION_LABEL
from liveavatar.transport.ice import rtc_configuration
from liveavatar.transport.opus import OpusPacker
from liveavatar.transport.tracks import AudioSource, AvatarAudioTrack, AvatarVideoTrack, MediaSource
from liveavatar.transport.vp8 import TalkingHeadVp8Encoder, use_encoder

log = logging.getLogger(__name__)
DROPPED_STATES = frozenset({"failed", "closed"})
OUTBOX_LIMIT = 1000
"""Messages held until the data channel opens; more are dropped (a client that never opens it)."""
ANIMATION_BACKLOG = 64 * 1024
"""Bytes the animation channel may hold unsent; beyond that frames are dropped (a client that stopped reading)."""


class Peer:
    """One WebRTC peer connection; reports messages, state changes and inbound media through callbacks.

    With `video` None (a client-rendered session) it sends audio only: no video track, no encoder.
    """

    def __init__(
        self,
        audio: AudioSource,
        clock: Clock,
        ice_servers: Sequence[dict[str, Any]],
        *,
        video: MediaSource | None,
        on_message: Callable[[str | bytes], None],
        on_state: Callable[[str], None],
        on_audio: Callable[[av.AudioFrame], None] | None = None,
        on_video: Callable[[av.VideoFrame], None] | None = None,
        on_animation: Callable[[], None] | None = None,
    ) -> None:
        self._pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self._audio = AvatarAudioTrack(audio, clock)
        self._video = AvatarVideoTrack(video, clock) if video is not None else None
        self._audio_sender: RTCRtpSender | None = None
        self._audio_packer = OpusPacker()
        self._packs_audio = False
        """Whether the audio sender packs with `_audio_packer` (else with aiortc's own encoder, alike)."""
        self._on_message = on_message
        self._on_state = on_state
        self._on_audio = on_audio
        self._on_video = on_video
        self._on_animation = on_animation
        self._channel: RTCDataChannel | None = None
        self._animation: RTCDataChannel | None = None
        self._outbox: list[str] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._pc.on("datachannel", self._attach_channel)
        self._pc.on("track", self._read_track)
        self._closing = False
        self._pc.on("connectionstatechange", self._state_changed)

    @property
    def state(self) -> str:
        """The peer connection's state (new, connecting, connected, disconnected, failed, closed)."""
        return str(self._pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        """Accept the client's offer (complete, non-trickle) and return the answer SDP."""
        if "m=application" not in offer_sdp:
            raise ParamError("the offer has no data channel: create it before the offer")
        for kind in ("audio", "video") if self._video is not None else ("audio",):
            if f"m={kind}" not in offer_sdp:
                raise ParamError(f"the offer must receive {kind}: add a recvonly {kind} transceiver")
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise ParamError(f"invalid SDP offer: {exc}") from exc
        self._audio_sender = self._pc.addTrack(self._audio)
        self._packs_audio = use_encoder(self._audio_sender, self._audio_packer)  # the track encodes either way
        if self._video is not None:
            video_sender = self._pc.addTrack(self._video)
            self._prefer_vp8(video_sender)
            self._video.encoder_draws = use_encoder(video_sender, TalkingHeadVp8Encoder())
        # Without a video track an offered video m-line is answered inactive (recvonly with a camera).
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return str(self._pc.localDescription.sdp)

    def _prefer_vp8(self, sender: RTCRtpSender) -> None:
        # VP8 costs ~1 ms per 512x512 frame (transport/vp8.py settings) against 6-8 ms for H.264.
        codecs = RTCRtpSender.getCapabilities("video").codecs
        preferred = [c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")]
        for transceiver in self._pc.getTransceivers():
            if transceiver.sender is sender:
                transceiver.setCodecPreferences(preferred)

    def send(self, text: str) -> None:
        """Send a message on the data channel (held until the channel opens); never raises.

        aiortc runs this inside its own connection loop (from a message handler): an exception here
        would end that loop and with it the video, so a message that cannot go is logged and dropped.
        """
        channel = self._channel
        try:
            if channel is not None and channel.readyState == "open":
                channel.send(text)
            elif (channel is None or channel.readyState == "connecting") and len(self._outbox) < OUTBOX_LIMIT:
                self._outbox.append(text)
        except Exception:
            log.exception("dropped a %d-character data-channel message that could not be sent", len(text))

    def send_animation(self, data: bytes) -> bool:
        """Send a binary message on the animation channel; False when it is not open. Never raises.

        A client that stops reading gets its frames dropped past ANIMATION_BACKLOG (True: the stream goes on).
        """
        channel = self._animation
        if channel is None or channel.readyState != "open" or self._closing:
            return False
        try:
            if channel.bufferedAmount <= ANIMATION_BACKLOG:
                channel.send(data)
        except Exception:
            log.exception("dropped a %d-byte animation message that could not be sent", len(data))
        return True

    def audio_rtp_origin(self) -> int | None:
        """The RTP timestamp aiortc gives the audio track's pts 0; None until its first packet went out.

        aiortc draws a random origin for each sender, sends origin + pts and keeps the origin to itself; the
        timestamp of the last packet sent less that packet's pts gives it back. The pts comes from the
        packer (a track that skipped frames, or started late on a rejoin, has pts ahead of its packet count);
        without it, from the count of packets (20 ms each, from pts 0, none skipped).
        """
        sender = self._audio_sender
        count = getattr(sender, "_RTCRtpSender__packet_count", None)
        last = getattr(sender, "_RTCRtpSender__rtp_timestamp", None)
        if not isinstance(count, int) or not isinstance(last, int) or count < 1:
            return None
        pts = self._audio_packer.pts_of(count) if self._packs_audio else AUDIO_SAMPLES * (count - 1)
        return None if pts is None else (last - pts) % (1 << 32)

    def _state_changed(self) -> None:
        # Once the owner closes this peer, its last state changes ("closed") are not news to the owner:
        # reporting them would have it start work (a rejoin wait) that keeps it alive after it closed.
        if not self._closing:
            self._on_state(self._pc.connectionState)

    def _receive(self, raw: str | bytes) -> None:
        # The handler runs inside aiortc's SCTP loop: nothing it raises may reach that loop.
        if self._closing:
            return
        try:
            self._on_message(raw)
        except Exception:
            log.exception("handling a %d-byte data-channel message failed", len(raw))

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        if channel.label == ANIMATION_LABEL:
            self._attach_animation(channel)
            return
        if self._channel is not None:
            return  # one channel carries the stream messages; later ones are ignored
        self._channel = channel
        channel.on("message", self._receive)
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _attach_animation(self, channel: RTCDataChannel) -> None:
        if self._animation is not None:
            return  # one animation channel per peer
        self._animation = channel
        if channel.readyState == "open":
            self._animation_opened()
        else:
            channel.on("open", self._animation_opened)

    def _animation_opened(self) -> None:
        # Called from aiortc's SCTP loop: nothing may escape into it.
        if self._on_animation is None or self._closing:
            return
        try:
            self._on_animation()
        except Exception:
            log.exception("starting the animation stream failed")

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for text in outbox:
            self.send(text)

    def _read_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._drain(track), name=f"inbound-{track.kind}")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _drain(self, track: MediaStreamTrack) -> None:
        # Inbound frames must be read even when unused, or aiortc's queue grows without bound.
        handler: Callable[[Any], None] | None = self._on_audio if track.kind == "audio" else self._on_video
        try:
            while True:
                frame = await track.recv()
                if handler is not None:
                    handler(frame)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("reading the client's %s track failed", track.kind)

    async def aclose(self) -> None:
        """Stop the tracks, close the connection, end the readers; no callback reaches the owner after this starts."""
        self._closing = True
        for task in list(self._readers):
            task.cancel()
        self._audio.stop()
        if self._video is not None:
            self._video.stop()
        with contextlib.suppress(Exception):
            await self._pc.close()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
