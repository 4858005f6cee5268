"""One live session: its peer, its settings, the stream messages it answers and the replies it gives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import av
import cv2

from liveavatar.clock import new_id
from liveavatar.errors import LiveAvatarError, NoPermission
from liveavatar.fetch import fetch
from liveavatar.protocol import (
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
from liveavatar.render.background import Background
from liveavatar.session.avatar import AvatarSource
from liveavatar.session.dialogue import Brain, Dialogue, Knowledge
from liveavatar.session.listening import Ears, Listener
from liveavatar.session.settings import SessionSettings
from liveavatar.session.turn import Turn, retell
from liveavatar.speech.base import Voice
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store.sessions import Status
from liveavatar.transport.peer import DROPPED_STATES, Peer
from liveavatar.transport.tracks import MediaClock

log = logging.getLogger(__name__)
EndSession = Callable[[Status, str], None]
ReplyKind = Literal["answer", "say"]
BACKGROUND_MAX_BYTES = 10 * 1024 * 1024


class Session:
    """A session this process holds, from create until close; at most one peer at a time."""

    def __init__(
        self,
        session_id: str,
        owner_id: int,
        settings: SessionSettings,
        *,
        source: AvatarSource,
        voices: VoiceRegistry,
        allow_private_urls: bool = False,
        ears: Ears | None = None,
        brain: Brain | None = None,
        knowledge: Knowledge | None = None,
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
        self.latest_camera: av.VideoFrame | None = None
        """The client's latest camera frame, if it publishes one."""
        self._voices = voices
        self._allow_private_urls = allow_private_urls
        self.history: list[dict[str, Any]] = []
        """What was said, in order: the client's text and what the user actually heard of each reply."""
        self.interrupts: list[dict[str, float]] = []
        """For each interrupt: session time it was handled and where the sound stopped."""
        self._turn: Turn | None = None
        self.knowledge = knowledge
        self.dialogue = Dialogue(brain, knowledge) if brain is not None else None
        self.barge_ins: list[dict[str, float]] = []
        """For each barge-in: the user's speech onset and where the avatar's sound stopped (session time)."""
        self._listener: Listener | None = None
        if ears is not None:
            self._listener = Listener(
                ears, self.clock, lambda: self.settings, on_speech=self._barge_in, on_utterance=self._user_said
            )
        self._ice_servers = ice_servers
        self._rejoin_grace = rejoin_grace
        self._end = end
        self._peer: Peer | None = None
        self._pacer = OutboundPacer(self._send, settings.profile)
        self._assembler = ChatAssembler()
        self._replies: asyncio.Queue[tuple[ReplyKind, str]] = asyncio.Queue()
        self._reply_task: asyncio.Task[None] | None = None
        self._grace_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._pacer.run(), "pacer")
        self._spawn(self._reply_loop(), "replies")
        self._spawn(self._expire_partials(), "chat-expiry")
        if self._listener is not None:
            self._spawn(self._listener.run(), "listener")
        if settings.background_url:
            self._spawn(self._change_background(settings.background_url), "background")

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
        if not self.joined and self.knowledge is not None and self.knowledge.prologue.strip():
            self._replies.put_nowait(("say", self.knowledge.prologue))
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
        if self._listener is not None:
            self._listener.push(frame)

    def _barge_in(self, onset: float) -> None:
        # The detector reports onsets only after MIN_SPEECH_MS of voice: clicks and coughs don't interrupt.
        if self._turn is not None and self._turn.stopped_at is None:
            self.interrupt()
            if self._turn is not None and self._turn.stopped_at is not None:
                self.barge_ins.append({"onset": onset, "silent_from": self._turn.stopped_at})

    async def _user_said(self, text: str) -> None:
        self._pacer.push_chat(ChatStream(new_id(), "user", self.settings.profile).piece(text, last=True))
        self._replies.put_nowait(("answer", text))

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
                self._replies.put_nowait(("answer", text))
        elif isinstance(message, Interrupt | SetParams | SetAction):
            try:
                self._command(message)
            except LiveAvatarError as exc:
                self.send_control(ack(message.mid, message.cmd, exc.code, exc.msg))
        # Events from the client carry nothing the server acts on.

    def _command(self, command: Interrupt | SetParams | SetAction) -> None:
        if isinstance(command, Interrupt):
            self.interrupt()
        elif isinstance(command, SetParams):
            updated = self.settings.updated(command, self._voices)
            self._voice_for(updated)  # a language no voice speaks is refused here, not at the next reply
            self.settings = updated
            if self._listener is not None:
                self._listener.update(updated)
            if command.bgurl:
                self._spawn(self._change_background(command.bgurl, command), "background")
                return  # acked once the image is in
        else:
            now = self.clock.now()
            if command.action:
                self.source.motion.start_action(command.action, now)
            if command.expression:
                self.source.motion.start_expression(command.expression, now)
        self.send_control(ack(command.mid, command.cmd))

    async def _expire_partials(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._assembler.expire()

    # --- replies -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop the current reply now (sound within one frame) and drop queued ones."""
        while not self._replies.empty():
            self._replies.get_nowait()
        if self._turn is not None and self._reply_task is not None:
            at = self.clock.now()
            stopped = self._turn.interrupt()
            self.interrupts.append({"at": at, "silent_from": stopped})
            self._reply_task.cancel()

    async def _reply_loop(self) -> None:
        while True:
            kind, text = await self._replies.get()
            if kind == "answer":
                self.history.append({"from": "user", "text": text})
            turn = self._turn_for(kind, text)
            task = asyncio.create_task(turn.run(), name=f"turn-{self.session_id}")
            self._turn, self._reply_task = turn, task
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the session is closing, not just this reply being interrupted
            finally:
                self._turn = self._reply_task = None
                heard = turn.heard()
                self.history.append({"from": "bot", "text": heard, "interrupted": turn.stopped_at is not None})
                if self.dialogue is not None:
                    self.dialogue.remember(text if kind == "answer" else None, heard)

    def _turn_for(self, kind: ReplyKind, text: str) -> Turn:
        """A reply: the text itself (retelling, the prologue) or an LLM answer (dialogue mode)."""
        settings = self.settings
        voice = self._voice_for(settings)
        dialogue = kind == "answer" and settings.mode == 2 and self.dialogue is not None
        turn = Turn(
            retell(text),
            tts=self._voices.tts_for(voice),
            voice=voice,
            source=self.source,
            clock=self.clock,
            chat=ChatStream(new_id(), "bot", settings.profile),
            send_chat=self._pacer.push_chat,
            send_event=self.send_control,
            speed=settings.speed,
            pron_map=settings.pron_map,
            narrate=not dialogue,
        )
        if dialogue and self.dialogue is not None:
            turn.sentences = self.dialogue.answer(
                text,
                language=settings.language or voice.language,
                image=self._camera_jpeg(),
                on_text=turn.say_text,
                on_error=self.send_control,
            )
        return turn

    def _camera_jpeg(self) -> bytes | None:
        """The latest camera frame as JPEG, only when the LLM takes images (otherwise it costs nothing)."""
        frame = self.latest_camera
        if frame is None or self.dialogue is None or not self.dialogue.brain.llm.supports_images:
            return None
        ok, data = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return data.tobytes() if ok else None

    def _voice_for(self, settings: SessionSettings) -> Voice:
        """The session's voice: the one chosen, else the language's default voice."""
        voice = self._voices.get(settings.voice_id) if settings.voice_id else None
        return voice or self._voices.default_voice(settings.language)

    async def _change_background(self, url: str, command: SetParams | None = None) -> None:
        """Fetch (guarded) and show a background image; the set-params ack says how it went."""
        try:
            fetched = await fetch(url, max_bytes=BACKGROUND_MAX_BYTES, allow_private=self._allow_private_urls)
            background = await asyncio.to_thread(Background.from_bytes, fetched.content)
        except LiveAvatarError as exc:
            log.info("session %s: background %s refused: %s", self.session_id, url[:200], exc.msg)
            if command is not None:
                self.send_control(ack(command.mid, command.cmd, exc.code, f"bgurl: {exc.msg}"))
            return
        self.source.set_background(background)
        if command is not None:
            self.send_control(ack(command.mid, command.cmd))

    def transcript(self) -> dict[str, Any]:
        """What was said (plain values): the messages, what was heard, interrupts, barge-ins, passages."""
        return {
            "live": True,
            "messages": list(self.history),
            "interrupts": list(self.interrupts),
            "barge_ins": list(self.barge_ins),
            "passages": self.dialogue.last_passages if self.dialogue else [],
        }

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

