"""One live session: its peer, its settings, the stream messages it answers and the replies it gives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import av

from liveavatar.clock import new_id
from liveavatar.errors import NoPermission
from liveavatar.protocol import (
    AUDIO_END,
    AUDIO_START,
    ChatAssembler,
    ChatChunk,
    ChatStream,
    Event,
    Interrupt,
    Message,
    OutboundPacer,
    ProtocolError,
    SetAction,
    SetParams,
    ack,
    encode,
    event,
    parse,
)
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.text import split_sentences
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store.sessions import Status
from liveavatar.transport.peer import DROPPED_STATES, Peer
from liveavatar.transport.tracks import MediaClock, MediaSource

log = logging.getLogger(__name__)
EndSession = Callable[[Status, str], None]


class Session:
    """A session this process holds, from create until close; at most one peer at a time."""

    def __init__(
        self,
        session_id: str,
        owner_id: int,
        settings: SessionSettings,
        *,
        source: MediaSource,
        voices: VoiceRegistry,
        ice_servers: list[dict[str, Any]],
        rejoin_grace: float,
        end: EndSession,
    ) -> None:
        self.session_id = session_id
        self.owner_id = owner_id
        self.settings = settings
        self.source = source
        self.clock = MediaClock()
        self.joined = False
        self.inbound_frames = {"audio": 0, "video": 0}
        """Frames received from the client's microphone and camera."""
        self._voices = voices
        self._ice_servers = ice_servers
        self._rejoin_grace = rejoin_grace
        self._end = end
        self._peer: Peer | None = None
        self._pacer = OutboundPacer(self._send, settings.profile)
        self._assembler = ChatAssembler()
        self._replies: asyncio.Queue[str] = asyncio.Queue()
        self._reply_task: asyncio.Task[None] | None = None
        self._grace_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._pacer.run(), "pacer")
        self._spawn(self._reply_loop(), "replies")
        self._spawn(self._expire_partials(), "chat-expiry")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(work, name), name=f"{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, work: Coroutine[Any, Any, None], name: str) -> None:
        # A crash in one session's task fails that session, never the process or another session.
        try:
            await work
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("session %s: %s task crashed", self.session_id, name)
            self._end(Status.FAILED, f"internal error in {name}")

    # --- joining -------------------------------------------------------------------------------

    async def join(self, offer_sdp: str) -> str:
        """Answer a client's offer; a second live peer is refused, a rejoin after a drop is welcome."""
        if self._peer is not None and self._peer.state not in DROPPED_STATES:
            raise NoPermission("this session already has a connected peer; close it before joining again")
        if self._peer is not None:
            await self._peer.aclose()
        peer = Peer(
            self.source,
            self.clock,
            self._ice_servers,
            on_message=self._on_message,
            on_state=self._on_peer_state,
            on_audio=self._on_microphone,
            on_video=self._on_camera,
        )
        self._peer = peer
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            self._peer = None
            await peer.aclose()
            raise
        self.joined = True
        self._cancel_grace()
        return answer

    def _on_peer_state(self, state: str) -> None:
        log.info("session %s: peer %s", self.session_id, state)
        if state in DROPPED_STATES | {"disconnected"} and self._grace_task is None:
            self._grace_task = self._spawn(self._await_rejoin(), "rejoin-grace")
        elif state == "connected":
            self._cancel_grace()

    def _cancel_grace(self) -> None:
        if self._grace_task is not None:
            self._grace_task.cancel()
            self._grace_task = None

    async def _await_rejoin(self) -> None:
        await asyncio.sleep(self._rejoin_grace)
        self._grace_task = None
        self._end(Status.CLOSED, "client disconnected")

    def _on_microphone(self, frame: av.AudioFrame) -> None:
        self.inbound_frames["audio"] += 1

    def _on_camera(self, frame: av.VideoFrame) -> None:
        self.inbound_frames["video"] += 1

    # --- stream messages -----------------------------------------------------------------------

    def _send(self, text: str) -> None:
        if self._peer is not None:
            self._peer.send(text)

    def send_control(self, message: Message) -> None:
        """Send an ack or event ahead of any queued chat."""
        self._pacer.push_control(encode(message))

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = parse(raw)
            if message is None:
                return  # not v2: ignored, as the protocol says
            self._dispatch(message)
        except ProtocolError as exc:
            reply = exc.as_ack()
            if reply is None:
                reply = {**event("error"), "pld": {"event": "error", "code": int(exc.code), "msg": exc.msg}}
            self.send_control(reply)

    def _dispatch(self, message: ChatChunk | Interrupt | SetParams | SetAction | Event) -> None:
        if isinstance(message, ChatChunk):
            text = self._assembler.add(message)
            if text is not None and text.strip():
                self._replies.put_nowait(text)
        elif isinstance(message, Interrupt):
            self.interrupt()
            self.send_control(ack(message.mid, message.cmd))
        elif isinstance(message, SetParams):
            self.settings = self.settings.updated(message, self._voices)
            self.send_control(ack(message.mid, message.cmd))
        elif isinstance(message, SetAction):
            self.send_control(ack(message.mid, message.cmd))
        # Events from the client carry nothing the server acts on.

    async def _expire_partials(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._assembler.expire()

    # --- replies -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop the current reply and drop queued ones."""
        while not self._replies.empty():
            self._replies.get_nowait()
        if self._reply_task is not None:
            self._reply_task.cancel()

    async def _reply_loop(self) -> None:
        while True:
            text = await self._replies.get()
            self._reply_task = asyncio.current_task()
            turn = asyncio.create_task(self._reply(text), name=f"turn-{self.session_id}")
            self._reply_task = turn
            try:
                await turn
            except asyncio.CancelledError:
                if not turn.cancelled():
                    raise
            finally:
                self._reply_task = None
                self.send_control(event(AUDIO_END))

    async def _reply(self, text: str) -> None:
        """Retelling: the avatar says exactly the client's text, streamed back sentence by sentence."""
        self.send_control(event(AUDIO_START))
        stream = ChatStream(new_id(), "bot", self.settings.profile)
        sentences = split_sentences(text) or [text]
        for n, sentence in enumerate(sentences):
            last = n == len(sentences) - 1
            self._pacer.push_chat(stream.piece(sentence if last else sentence + " ", last=last))
            await asyncio.sleep(0)

    # --- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """End everything the session owns: peer, tracks, tasks."""
        await self._pacer.aclose()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._peer is not None:
            await self._peer.aclose()
            self._peer = None

