"""A client-rendered avatar: speech and motion on the audio timeline, sent as the animation stream; no renderer.

The audio track pulls 20 ms frames from the puppet as from an AvatarSource. Each pull also moves the
animation stream on: once the audio handed out comes within LEAD of the next unsent frame, a batch of
face states (the same `Motion.apply(FaceState(mouth=speaker.mouth_at(t)), t)` the video path draws) goes
out on the animation channel, stamped with its audio position. A change to what was already sent (speech
queued inside the sent window, an interrupt, an action) voids it with a CUT and the frames are sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from liveavatar.media import AUDIO_RATE, AUDIO_SAMPLES
from liveavatar.protocol.animation import Hello, encode_cut, encode_frames, encode_hello
from liveavatar.render.face import FaceState
from liveavatar.render.motion import Motion
from liveavatar.render.webpack import WEB_PACK_PATH
from liveavatar.session.speaker import Speaker

log = logging.getLogger(__name__)

FPS = 25
FRAME_SAMPLES = AUDIO_RATE // FPS
"""Audio samples per animation frame: frame j is at position j * FRAME_SAMPLES (session time j / FPS)."""
BATCH = 5
"""Frames per FRAMES message (200 ms)."""
LEAD = int(0.1 * AUDIO_RATE)
"""A batch goes once the audio handed to the encoder is this close (samples) to its first frame."""
MOUTH_REACH = int(0.15 * AUDIO_RATE)
"""How long before its sound queued speech may move the mouth (lip-sync lead and coarticulation)."""
RTP_WAIT = 50
"""Audio frames to wait for the audio's RTP timestamp base before starting the stream without it (1 s)."""

SendAnimation = Callable[[bytes], bool]
"""Sends one binary message on the animation channel; False when it could not go (never raises)."""
RtpOrigin = Callable[[], int | None]
"""The RTP timestamp of the audio track's sample 0, once its first packet has gone out."""


class Puppet:
    """What a client-rendered session plays and animates: the client draws the face from the stream."""

    def __init__(self, avatar_id: str, size: tuple[int, int], motion: Motion, lead: float = 0.03) -> None:
        self.speaker = Speaker(lead)
        self.motion = motion
        self.size = size
        self.frames_sent = 0
        """Face states sent so far (including those sent again after a CUT)."""
        self.cuts = 0
        self._info: dict[str, Any] = {
            "avatar_id": avatar_id,
            "web_pack": WEB_PACK_PATH.format(avatar_id=avatar_id),
            "background": None,
            "lead_ms": LEAD * 1000 // AUDIO_RATE,
            "batch": BATCH,
        }
        self._send: SendAnimation | None = None
        self._rtp_origin: RtpOrigin = lambda: None
        self._next: int | None = None
        """Index of the next frame to send; None until HELLO went out on the current channel."""
        self._rtp_base = 0
        self._waited = 0
        self._tail = 0
        self._restart = False

    # --- what the session drives ---------------------------------------------------------------

    def attach(self, send: SendAnimation, rtp_origin: RtpOrigin) -> None:
        """Stream on a newly opened animation channel: HELLO, then frames from the current audio position."""
        self._send, self._rtp_origin = send, rtp_origin
        self._next, self._waited = None, 0

    def detach(self) -> None:
        """Stop streaming (the channel or its peer is gone)."""
        self._send, self._rtp_origin, self._next = None, lambda: None, None

    def restart(self) -> None:
        """Motion changed from now (an action, an expression): the frames sent ahead are sent again."""
        self._restart = True

    def show_background(self, url: str | None, video: bool = False) -> None:
        """Tell the client the background to draw behind the avatar (HELLO again)."""
        self._info["background"] = None if url is None else {"url": url, "video": video}
        if self._next is not None:
            self._emit(self._hello())

    def face_at(self, position: int) -> FaceState:
        """The face at an audio position, exactly as the server renderer would draw it."""
        t = position / AUDIO_RATE
        return self.motion.apply(FaceState(mouth=self.speaker.mouth_at(t)), t)

    # --- the audio track's side ----------------------------------------------------------------

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        """The next 20 ms of speech (or silence) for the audio track's time `t`; the stream follows it."""
        samples = self.speaker.audio_frame(t)
        position = round(t * AUDIO_RATE)  # the playback follows the track's time, skips included
        if self._send is not None:
            try:
                self._advance(position)
            except Exception:
                # this runs inside the audio track's recv(): the sound must go on whatever the stream does
                log.exception("the animation stream failed at position %d; it stops", position)
                self.detach()
        return samples

    def _advance(self, position: int) -> None:
        handed = position + AUDIO_SAMPLES  # audio before this has gone to the encoder
        if self._next is None:
            origin = self._rtp_origin()
            if origin is None and self._waited < RTP_WAIT:
                self._waited += 1
                return
            # the track stamps sample p with pts p; aiortc sends origin + pts
            self._rtp_base = 0 if origin is None else origin % (1 << 32)
            self._info["rtp_known"] = origin is not None
            if not self._emit(self._hello()):
                self.detach()  # the channel closed: the next one that opens attaches again
                return
            self._next = position // FRAME_SAMPLES  # the frame whose sound is being handed out
            self._tail = self._queued_until()
            self._restart = False
        else:
            self._check_changes(position, handed)
            self._next = max(self._next, position // FRAME_SAMPLES)  # frames of skipped audio go unsent
        while self._next * FRAME_SAMPLES < handed + LEAD:
            first = self._next
            states = [self.face_at((first + i) * FRAME_SAMPLES) for i in range(BATCH)]
            if not self._emit(encode_frames(first * FRAME_SAMPLES, states, FPS)):
                self.detach()
                return
            self._next = first + BATCH
            self.frames_sent += BATCH

    def _check_changes(self, position: int, handed: int) -> None:
        """CUT the frames sent ahead when what they show changed since they were computed.

        Frames from the one at `position` (whose sound is being handed out now) may still be replaced.
        """
        tail = self._queued_until()
        expected = max(self._tail, handed)
        self._tail = tail
        changed_from: int | None = None
        if tail != expected:  # speech queued (a reply starting, a new sentence) or cut (interrupt)
            changed_from = min(tail, expected) - MOUTH_REACH
        if self._restart:
            self._restart = False
            changed_from = position
        assert self._next is not None
        if changed_from is None:
            return
        first = -(-max(changed_from, position) // FRAME_SAMPLES)
        if first < self._next and self._emit(encode_cut(first * FRAME_SAMPLES)):
            self._next = first
            self.cuts += 1

    def _queued_until(self) -> int:
        return round(self.speaker.queued_until() * AUDIO_RATE)

    def _hello(self) -> bytes:
        width, height = self.size
        return encode_hello(Hello(FPS, width, height, self._rtp_base, dict(self._info)))

    def _emit(self, message: bytes) -> bool:
        return self._send is not None and self._send(message)
