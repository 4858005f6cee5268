"""The session-host seam: what the API asks of a process that holds live sessions, in plain picklable values.

A host may be the API process itself, a worker process on the same machine or a Ray actor on another one:
everything crossing this seam is a frozen dataclass of plain values, so it pickles over a pipe or to Ray.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from liveavatar.errors import Code, LiveAvatarError

SHUTDOWN_REASON = "server shut down"


@dataclass(frozen=True)
class KnowledgeSpec:
    """The knowledge base a dialogue session answers from (read from the database by the API)."""

    kb_id: str
    prompt: str = ""
    prologue: str = ""


@dataclass(frozen=True)
class SessionSpec:
    """Everything a host needs to start a created session; the API resolved every database reference."""

    session_id: str
    owner_id: int
    avatar_id: str
    mode_type: int
    duration: float
    """Seconds the session may last from its creation."""
    params: dict[str, Any] = field(default_factory=dict)
    """The create request's optional fields (voice, language, background, voice params, transport profile)."""
    knowledge: KnowledgeSpec | None = None


@dataclass(frozen=True)
class HostStats:
    """One host's counters, for placement, health and metrics."""

    host_id: str
    node: str
    """The machine (host name) the host runs on."""
    pid: int
    live_sessions: int
    joined_sessions: int
    inbound_audio_frames: int
    inbound_video_frames: int
    cpu_seconds: float
    """CPU time the host's process has used (user + system)."""
    rss_bytes: int
    """Resident memory of the host's process."""


@dataclass(frozen=True)
class SessionJoined:
    """A client joined the session for the first time: it is live."""

    session_id: str


@dataclass(frozen=True)
class SessionEnded:
    """The session ended normally (closed, duration elapsed, client gone)."""

    session_id: str
    reason: str


@dataclass(frozen=True)
class SessionFailed:
    """The session ended because something broke (or the server shut down under it)."""

    session_id: str
    error: str


@dataclass(frozen=True)
class StageTimed:
    """How long one stage of a turn took (for the latency histograms; no session id, no text)."""

    stage: str
    seconds: float


HostEvent = SessionJoined | SessionEnded | SessionFailed | StageTimed


@dataclass(frozen=True)
class RemoteError:
    """A `LiveAvatarError` as it crosses a process boundary: its code and message."""

    code: int
    msg: str

    @classmethod
    def of(cls, exc: LiveAvatarError) -> RemoteError:
        """The plain form of an error."""
        return cls(int(exc.code), exc.msg)

    def rebuild(self) -> LiveAvatarError:
        """An error with the same response code and message on this side."""
        error = LiveAvatarError(self.msg)
        error.code = Code(self.code)
        return error


class HostGone(Exception):
    """The host died (its process exited, its node left the cluster)."""


class SessionHost(Protocol):
    """Owns live sessions in one process; every argument and result is a plain value."""

    host_id: str
    """Unique among the hosts of this API process, and stored with each session it runs."""

    async def open(self, spec: SessionSpec) -> None:
        """Start holding a created session (it waits for its client until its join deadline)."""
        ...

    async def join(self, session_id: str, offer_sdp: str) -> str:
        """Connect a client: offer in, answer out (SessionClosed when the session has ended)."""
        ...

    async def close(self, session_id: str, reason: str) -> None:
        """End a session (idempotent); a SessionEnded event follows."""
        ...

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """What was said in a live session (plain values); None when this host does not hold it."""
        ...

    async def stats(self) -> HostStats:
        """The host's counters now."""
        ...

    def events(self) -> AsyncIterator[HostEvent]:
        """Status events of the host's sessions, in order; ends (or raises HostGone) when the host dies."""
        ...

    async def aclose(self) -> None:
        """End every session (each reported as failed: the server shut down) and stop the host."""
        ...
