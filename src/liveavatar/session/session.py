"""One live session: its peer, its settings, the stream messages it answers and the replies it gives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import av

from liveavatar.clock import new_id
from liveavatar.errors import Code, LiveAvatarError, NoPermission, RateLimited
from liveavatar.fetch import fetch
from liveavatar.media import MediaClock, Timing, untimed
from liveavatar.protocol import (
    ChatAssembler,
    ChatChunk,
    ChatStream,
    Inbound,
    Interrupt,
    Message,
    OutboundPacer,
    ProtocolError,
    SetAction,
    SetParams,
    ack,
    encode,
    error_event,
    parse,
)
from liveavatar.render.background import Background
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.conversation import Conversation, voice_for
from liveavatar.session.dialogue import Brain, Dialogue, Knowledge
from liveavatar.session.listening import Ears, Listener
from liveavatar.session.puppet import Puppet
from liveavatar.session.settings import SessionSettings
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store.sessions import Status
from liveavatar.transport.peer import DROPPED_STATES, Peer

log = logging.getLogger(__name__)
EndSession = Callable[[Status, str], None]
BACKGROUND_MAX_BYTES = 10 * 1024 * 1024
MAX_BACKGROUND_FETCHES = 2
"""Background images a session fetches at once; another bgurl meanwhile is refused (1005)."""
INBOX = 1024
"""Stream messages waiting to be handled; beyond that a flood is dropped (and the client told once)."""


class Session:
    """A session this process holds, from create until close; at most one peer at a time."""

    def __init__(
        self,
        session_id: str,
        owner_id: int,
        settings: SessionSettings,
        *,
        source: AvatarSource | Puppet,
        voices: VoiceRegistry,
        allow_private_urls: bool = False,
        ears: Ears | None = None,
        brain: Brain | None = None,
        knowledge: Knowledge | None = None,
        ice_servers: list[dict[str, Any]],
        rejoin_grace: float,
        end: EndSession,
        timing: Timing = untimed,
    ) -> None:
        self.session_id = session_id
        self.owner_id = owner_id
        self.settings = settings
        self.source = source
        self.clock = MediaClock()
        self.joined = False
        self.inbound_frames = {"audio": 0, "video": 0}
        """Frames received from the client's microphone and camera."""
        self.latest_camera: av.VideoFrame | None = None
        """The client's latest camera frame, if it publishes one."""
        self._voices = voices
        self._allow_private_urls = allow_private_urls
        self.knowledge = knowledge
        self._pacer = OutboundPacer(self._send, settings.profile)
        self.conversation = Conversation(
            speaker=source.speaker,
            clock=self.clock,
            voices=voices,
            settings=lambda: self.settings,
            send_chat=self._pacer.push_chat,
            send_event=self.send_control,
            dialogue=Dialogue(brain, knowledge, timing=timing) if brain is not None else None,
            camera=lambda: self.latest_camera,
            timing=timing,
        )
        self.barge_ins: list[dict[str, float]] = []
        """For each barge-in: the user's speech onset and where the avatar's sound stopped (session time)."""
        self._listener: Listener | None = None
        if ears is not None:
            self._listener = Listener(
                ears,
                self.clock,
                lambda: self.settings,
                on_speech=self._barge_in,
                on_utterance=self._user_said,
                timing=timing,
            )
        self._ice_servers = ice_servers
        self._rejoin_grace = rejoin_grace
        self._end = end
        self._peer: Peer | None = None
        self._assembler = ChatAssembler()
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue(INBOX)
        self._inbox_overflowed = False
        self._backgrounds: set[asyncio.Task[None]] = set()
        self._grace_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._pacer.run(), "pacer")
        self._spawn(self.conversation.run(), "replies")
        self._spawn(self._handle_inbox(), "inbox")
        self._spawn(self._expire_partials(), "chat-expiry")
        if self._listener is not None:
            self._spawn(self._listener.run(), "listener")
        if settings.background_url:
            self._fetch_background(settings.background_url)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(work, name), name=f"{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: work.close())  # cancelled before it ran (a session closed at once)
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
            if isinstance(self.source, Puppet):
                self.source.detach()  # the old peer's channel; the new one attaches when it opens
            await self._peer.aclose()
        peer = Peer(
            self.source,
            self.clock,
            self._ice_servers,
            video=self.source if isinstance(self.source, AvatarSource) else None,
            on_message=self._on_message,
            on_state=self._on_peer_state,
            on_audio=self._on_microphone,
            on_video=self._on_camera,
            on_animation=self._start_animation,
        )
        self._peer = peer
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            self._peer = None
            await peer.aclose()
            raise
        if not self.joined and self.knowledge is not None and self.knowledge.prologue.strip():
            self.conversation.say(self.knowledge.prologue)
        self.joined = True
        self._cancel_grace()
        return answer

    def _start_animation(self) -> None:
        """The client opened the animation channel: a client-rendered session streams the face on it."""
        if isinstance(self.source, Puppet) and self._peer is not None:
            self.source.attach(self._peer.send_animation, self._peer.audio_rtp_origin)

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
        if self._listener is not None:
            self._listener.push(frame)

    async def _barge_in(self, onset: float) -> None:
        # The detector reports onsets only after MIN_SPEECH_MS of voice: clicks and coughs don't interrupt.
        if self.conversation.speaking:
            stopped = await self.conversation.interrupt()
            if stopped is not None:
                self.barge_ins.append({"onset": onset, "silent_from": stopped})

    async def _user_said(self, text: str) -> None:
        self._pacer.push_chat(ChatStream(new_id(), "user", self.settings.profile).piece(text, last=True))
        self._owe_answer(text, None)

    def _owe_answer(self, text: str, mid: str | None) -> None:
        try:
            self.conversation.answer(text, mid)
        except RateLimited as exc:
            self.send_control(error_event(exc.code, exc.msg))

    def _on_camera(self, frame: av.VideoFrame) -> None:
        # Keeping a reference is free; the frame is encoded only if a dialogue turn sends it to the LLM.
        self.inbound_frames["video"] += 1
        self.latest_camera = frame

    # --- stream messages -----------------------------------------------------------------------

    def _send(self, text: str) -> None:
        if self._peer is not None:
            self._peer.send(text)

    def send_control(self, message: Message) -> None:
        """Send an ack or event ahead of any queued chat."""
        self._pacer.push_control(encode(message))

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer a malformed message: a command gets its failure ack, anything else an error (behind chat)."""
        reply = exc.as_ack()
        if reply is not None:
            self.send_control(reply)
        else:
            self._pacer.push_complaint(encode(error_event(exc.code, exc.msg)))

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = parse(raw)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        if message is None:
            return  # not v2: ignored, as the protocol says
        if isinstance(message, Interrupt):
            self.conversation.cut()  # the sound stops from the next frame, even behind a backlog
        # Otherwise messages are handled in arrival order by one task: an interrupt never overtakes a chat.
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            if not self._inbox_overflowed:
                self._inbox_overflowed = True
                self._pacer.push_complaint(
                    encode(error_event(Code.RATE_LIMITED, "too many stream messages; some were dropped"))
                )

    async def _handle_inbox(self) -> None:
        while True:
            message = await self._inbox.get()
            if self._inbox.empty():
                self._inbox_overflowed = False
            try:
                await self._dispatch(message)
            except ProtocolError as exc:
                self._refuse(exc)

    async def _dispatch(self, message: Inbound) -> None:
        if isinstance(message, ChatChunk):
            text = self._assembler.add(message)
            if text is not None and text.strip():
                self._owe_answer(text, message.mid)
        elif isinstance(message, Interrupt | SetParams | SetAction):
            try:
                await self._command(message)
            except LiveAvatarError as exc:
                self.send_control(ack(message.mid, message.cmd, exc.code, exc.msg))
        # Events from the client carry nothing the server acts on.

    async def _command(self, command: Interrupt | SetParams | SetAction) -> None:
        if isinstance(command, Interrupt):
            await self.conversation.interrupt()
        elif isinstance(command, SetParams):
            updated = self.settings.updated(command, self._voices)
            voice_for(self._voices, updated)  # a language no voice speaks is refused here, not at the next reply
            if command.bgurl and len(self._backgrounds) >= MAX_BACKGROUND_FETCHES:
                raise RateLimited("a background is already loading; try again when it is in")
            self.settings = updated
            if self._listener is not None:
                self._listener.update(updated)
            if command.bgurl:
                self._fetch_background(command.bgurl, command)
                return  # acked once the image is in
        else:
            now = self.clock.now()
            if command.action:
                self.source.motion.start_action(command.action, now)
            if command.expression:
                self.source.motion.start_expression(command.expression, now)
            if isinstance(self.source, Puppet):
                self.source.restart()  # frames sent ahead of the audio did not have the new motion
        self.send_control(ack(command.mid, command.cmd))

    async def _expire_partials(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._assembler.expire()

    # --- background ----------------------------------------------------------------------------

    def _fetch_background(self, url: str, command: SetParams | None = None) -> None:
        task = self._spawn(self._change_background(url, command), "background")
        self._backgrounds.add(task)
        task.add_done_callback(self._backgrounds.discard)

    async def _change_background(self, url: str, command: SetParams | None = None) -> None:
        """Fetch (guarded) and show a background image; the set-params ack says how it went."""
        try:
            fetched = await fetch(url, max_bytes=BACKGROUND_MAX_BYTES, allow_private=self._allow_private_urls)
            background = await asyncio.to_thread(Background.from_bytes, fetched.content)
        except Exception as exc:
            # Whatever went wrong with the URL or the image, the session keeps its old background.
            reason = exc.msg if isinstance(exc, LiveAvatarError) else "the background could not be loaded"
            code = exc.code if isinstance(exc, LiveAvatarError) else Code.PROCESSING_ERROR
            log.info("session %s: background refused: %s", self.session_id, reason)
            if command is not None:
                self.send_control(ack(command.mid, command.cmd, code, f"bgurl: {reason}"))
            return
        if isinstance(self.source, Puppet):
            self.source.show_background(url, background.is_video)  # the client draws it
        else:
            self.source.set_background(background)
        if command is not None:
            self.send_control(ack(command.mid, command.cmd))

    # --- closing -------------------------------------------------------------------------------

    def transcript(self) -> dict[str, Any]:
        """What was said (plain values): the messages, what was heard, interrupts, barge-ins, passages."""
        return {"live": True, **self.conversation.transcript(), "barge_ins": list(self.barge_ins)}

    async def aclose(self) -> None:
        """End everything the session owns: peer, tracks, tasks."""
        await self._pacer.aclose()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if isinstance(self.source, Puppet):
            self.source.detach()
        if self._peer is not None:
            await self._peer.aclose()
            self._peer = None
