"""Joins a client's chunked chat messages (by `mid`, `idx`, `fin`) back into whole texts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NoReturn

from liveavatar.protocol.messages import ChatChunk, ProtocolError

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_CHUNKS = 4096
DEFAULT_MAX_PARTIALS = 16
DEFAULT_MAX_PENDING_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_REMEMBER = 256

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, counting a lone surrogate as the 3 bytes it would take."""
    return len(text.encode("utf-8", "surrogatepass"))


def join_surrogates(text: str) -> str:
    """Pair up surrogates left by a UTF-16 split (JavaScript's `slice`); lone ones become U+FFFD."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _quote(mid: str) -> str:
    """A mid for an error reason, cut short: reasons are logged and must stay small."""
    return repr(mid) if len(mid) <= 40 else repr(mid[:37] + "...")


@dataclass
class _Partial:
    """The chunks received so far for one `mid`."""

    touched: float
    chunks: dict[int, str] = field(default_factory=dict)
    fin_idx: int | None = None
    size: int = 0


class ChatAssembler:
    """Reassembles chunked chat: any order, duplicates ignored, bounded in size, count and time.

    Bounds: `max_bytes` per message, `max_chunks` per message, `max_partials` unfinished messages and
    `max_pending_bytes` held by all unfinished messages together.

    `add()` returns a message's whole text once chunks 0..fin have all arrived. Chunks for a `mid`
    that completed, failed or expired recently are ignored. The owner calls `expire()` now and then
    to drop partials that saw no chunk for `timeout` seconds.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_partials: int = DEFAULT_MAX_PARTIALS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        remember: int = DEFAULT_REMEMBER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_bytes, max_chunks, max_partials, max_pending_bytes, remember) < 1 or timeout <= 0:
            raise ValueError("ChatAssembler limits must be positive")
        self.max_bytes = max_bytes
        self.max_chunks = max_chunks
        self.max_partials = max_partials
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self.timeout = timeout
        self._remember = remember
        self._clock = clock
        self._partials: dict[str, _Partial] = {}
        self._finished: dict[str, None] = {}  # insertion-ordered set of recently finished mids

    @property
    def pending(self) -> int:
        """Number of messages still waiting for chunks."""
        return len(self._partials)

    @property
    def pending_bytes(self) -> int:
        """UTF-8 bytes held by unfinished messages."""
        return self._pending_bytes

    def add(self, chunk: ChatChunk) -> str | None:
        """Take one chunk; the whole text when its message is now complete, else None."""
        mid = chunk.mid
        if mid in self._finished:
            return None
        name = f"chat message {_quote(mid)}"
        if chunk.idx >= self.max_chunks:
            self._fail(mid, f"{name} has too many chunks (idx {chunk.idx}, max {self.max_chunks - 1})")
        now = self._clock()
        partial = self._partials.get(mid)
        if partial is None:
            if chunk.idx == 0 and chunk.fin:  # the common case: a message in one piece
                if utf8_size(chunk.text) > self.max_bytes:
                    self._fail(mid, self._too_long(mid))
                self._finish(mid)
                return join_surrogates(chunk.text)
            if len(self._partials) >= self.max_partials:
                self._fail(mid, f"too many unfinished chat messages (max {self.max_partials})")
            partial = self._partials[mid] = _Partial(touched=now)
        partial.touched = now
        if chunk.idx in partial.chunks:  # a duplicate: the first copy wins
            return None
        last_seen = max(partial.chunks, default=-1)
        if chunk.fin and (partial.fin_idx is not None or last_seen > chunk.idx):
            self._fail(mid, f"{name} has conflicting fin (chunk {chunk.idx})")
        if partial.fin_idx is not None and chunk.idx > partial.fin_idx:
            self._fail(mid, f"{name} has chunk {chunk.idx} after its fin {partial.fin_idx}")
        size = utf8_size(chunk.text)
        if partial.size + size > self.max_bytes:
            self._fail(mid, self._too_long(mid))
        if self._pending_bytes + size > self.max_pending_bytes:
            self._fail(mid, f"unfinished chat messages hold more than {self.max_pending_bytes} bytes")
        partial.size += size
        self._pending_bytes += size
        partial.chunks[chunk.idx] = chunk.text
        if chunk.fin:
            partial.fin_idx = chunk.idx
        # Every stored idx is <= fin_idx, so a full count means 0..fin are all here.
        if partial.fin_idx is None or len(partial.chunks) != partial.fin_idx + 1:
            return None
        self._drop(mid)
        self._finish(mid)
        return join_surrogates("".join(partial.chunks[i] for i in range(partial.fin_idx + 1)))

    def expire(self) -> list[str]:
        """Drop partials idle for `timeout` seconds or more; their mids, oldest first."""
        now = self._clock()
        stale = sorted((p.touched, mid) for mid, p in self._partials.items() if now - p.touched >= self.timeout)
        for _, mid in stale:
            self._drop(mid)
            self._finish(mid)
        return [mid for _, mid in stale]

    def _too_long(self, mid: str) -> str:
        return f"chat message {_quote(mid)} is longer than {self.max_bytes} bytes"

    def _finish(self, mid: str) -> None:
        """Remember `mid` so that late or repeated chunks for it are ignored (bounded memory)."""
        self._finished[mid] = None
        while len(self._finished) > self._remember:
            del self._finished[next(iter(self._finished))]

    def _drop(self, mid: str) -> None:
        partial = self._partials.pop(mid, None)
        if partial is not None:
            self._pending_bytes -= partial.size

    def _fail(self, mid: str, reason: str) -> NoReturn:
        """Drop the message and raise the error the caller reports (its later chunks are ignored)."""
        self._drop(mid)
        self._finish(mid)
        raise ProtocolError(reason, msg_type="chat", mid=mid)
