"""Outbound side of the data channel: transport limits, chat splitting, and a rate-limited sender."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from liveavatar.protocol.messages import Sender, chat, encode

log = logging.getLogger(__name__)

WINDOW: Final = 1.0
"""Rates are per second, enforced over every sliding window of this many seconds."""

_MARGIN: Final = 1e-6
"""Added to each pause so that float rounding can never wake the sender a hair too early."""


@dataclass(frozen=True)
class TransportProfile:
    """Data-channel limits of one transport; a message's size counts its whole UTF-8 JSON text."""

    name: str
    max_message_bytes: int
    max_bytes_per_second: int | None = None
    max_messages_per_second: int | None = None

    def __post_init__(self) -> None:
        if self.max_message_bytes < 128:
            raise ValueError(f"{self.name}: max_message_bytes must be >= 128")
        if self.max_bytes_per_second is not None and self.max_bytes_per_second < self.max_message_bytes:
            raise ValueError(f"{self.name}: max_bytes_per_second must be >= max_message_bytes")
        if self.max_messages_per_second is not None and self.max_messages_per_second < 1:
            raise ValueError(f"{self.name}: max_messages_per_second must be >= 1")


PROFILES: Final[Mapping[str, TransportProfile]] = MappingProxyType(
    {
        "agora": TransportProfile("agora", 1024, max_bytes_per_second=6 * 1024),
        "trtc": TransportProfile("trtc", 1024, max_bytes_per_second=8 * 1024, max_messages_per_second=30),
        "livekit": TransportProfile("livekit", 15 * 1024),
        "webrtc": TransportProfile("webrtc", 15 * 1024),
    }
)
"""Known transports by `stream_type`; "webrtc" is liveavatar's own data channel."""

DEFAULT_PROFILE: Final = PROFILES["webrtc"]

ERROR_BACKLOG: Final = 4
"""Complaints (answers to bad input) queued at most; more are dropped (counted): junk cannot crowd out replies."""


class MessageTooLarge(ValueError):
    """An outbound message bigger than the transport allows (only chat can be split)."""


def message_size(encoded: str) -> int:
    """Size of an encoded message on the wire, in UTF-8 bytes."""
    return len(encoded.encode("utf-8"))


def fits(encoded: str, profile: TransportProfile = DEFAULT_PROFILE) -> bool:
    """Whether one encoded message is within the transport's per-message limit."""
    return message_size(encoded) <= profile.max_message_bytes


def check_fits(encoded: str, profile: TransportProfile = DEFAULT_PROFILE) -> str:
    """Return `encoded` unchanged, or raise MessageTooLarge when the transport cannot carry it."""
    size = message_size(encoded)
    if size > profile.max_message_bytes:
        raise MessageTooLarge(f"{size}-byte message exceeds {profile.name}'s {profile.max_message_bytes} bytes")
    return encoded


def _json_cost(char: str) -> int:
    """UTF-8 bytes one character takes inside an `encode()`d JSON string (escaping is per character)."""
    if char in '"\\\n\r\t\b\f':
        return 2
    code = ord(char)
    if code < 0x20 or 0xD800 <= code <= 0xDFFF:
        return 6  # \u00XX, or an escaped lone surrogate
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _envelope(mid: str, idx: int, fin: bool, from_: Sender) -> int:
    return message_size(encode(chat(mid, idx, fin, "", from_)))


def _splits_pair(text: str, end: int) -> bool:
    """Whether cutting at `end` would part a surrogate pair that text from a UTF-16 split still holds."""
    return 0 < end < len(text) and "\ud800" <= text[end - 1] <= "\udbff" and "\udc00" <= text[end] <= "\udfff"


def split_chat(
    mid: str,
    text: str,
    from_: Sender,
    profile: TransportProfile = DEFAULT_PROFILE,
    *,
    first_idx: int = 0,
    last: bool = True,
) -> list[str]:
    """Encode `text` as chat chunks (idx from `first_idx`, fin on the last when `last`), each within the profile.

    Splits only between characters; the chunks' texts concatenate to `text` exactly. An empty text
    gives one empty chunk. `first_idx`/`last` let a reply stream sentence by sentence under one mid.
    """
    limit = profile.max_message_bytes
    prefix = list(itertools.accumulate((_json_cost(c) for c in text), initial=0))
    total = prefix[-1]
    out: list[str] = []
    pos, idx = 0, first_idx
    while True:
        if _envelope(mid, idx, last, from_) + total - prefix[pos] <= limit:
            out.append(encode(chat(mid, idx, last, text[pos:], from_)))
            return out
        budget = limit - _envelope(mid, idx, False, from_)
        end = bisect.bisect_right(prefix, prefix[pos] + budget, lo=pos) - 1
        if _splits_pair(text, end):
            end -= 1
        if end <= pos:
            raise MessageTooLarge(f"chat mid {mid[:40]!r} leaves no room for text within {limit} bytes")
        out.append(encode(chat(mid, idx, False, text[pos:end], from_)))
        pos = end
        idx += 1


class ChatStream:
    """One chat message sent in pieces as it is produced: idx continues across pieces, fin on the last."""

    def __init__(self, mid: str, from_: Sender, profile: TransportProfile = DEFAULT_PROFILE) -> None:
        self.mid = mid
        self.from_: Sender = from_
        self.profile = profile
        self._next_idx = 0

    def piece(self, text: str, *, last: bool) -> list[str]:
        """Encoded chunks for the next piece of text."""
        chunks = split_chat(self.mid, text, self.from_, self.profile, first_idx=self._next_idx, last=last)
        self._next_idx += len(chunks)
        return chunks


def fit_control(encoded: str, profile: TransportProfile = DEFAULT_PROFILE) -> str | None:
    """`encoded` (an ack or event) made to fit the profile: its `msg` cut short, then its `mid`, `cmd` dropped.

    None when even that does not fit. Control messages are built from client input (a mid, a reason
    naming a value), so the sender shrinks them rather than fail on them.
    """
    if fits(encoded, profile):
        return encoded
    try:
        message = json.loads(encoded)
    except ValueError:
        return None
    pld = message.get("pld") if isinstance(message, dict) else None
    if not isinstance(pld, dict):
        return None
    text = pld.get("msg")
    if isinstance(text, str):
        # The longest prefix of msg that fits, by bisection (each try encodes the whole message once).
        lo, hi = 0, len(text)
        while lo < hi:
            keep = (lo + hi + 1) // 2
            pld["msg"] = text[:keep] + "..."
            lo, hi = (keep, hi) if fits(encode(message), profile) else (lo, keep - 1)
        pld["msg"] = text[:lo] + "..."
        shorter = encode(message)
        if fits(shorter, profile):
            return shorter
    for cut in ("mid", "cmd"):  # a client's own oversized mid or cmd: the ack goes without it
        if cut == "mid":
            message.pop("mid", None)
        elif isinstance(pld.get("cmd"), str):
            pld["cmd"] = ""
        shortest = encode(message)
        if fits(shortest, profile):
            return shortest
    return None


class OutboundPacer:
    """Sends encoded messages within the transport's size and rate limits.

    Control messages (acks, events) go before queued chat chunks; chat chunks keep their order.
    Complaints (error events answering malformed input) come last and at most `ERROR_BACKLOG` wait at
    once (the rest are counted in `dropped_errors`): junk input gets answered without delaying the bot's
    text or any ack.
    Rates hold over every sliding `WINDOW`. Drive it with `run()` (in the owner's task group) or
    with `pump()` / `next_delay()`; `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        send: Callable[[str], None],
        profile: TransportProfile = DEFAULT_PROFILE,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.profile = profile
        self._send = send
        self._clock = clock
        self._sleep = sleep
        self._control: deque[tuple[str, int]] = deque()
        self._chat: deque[tuple[str, int]] = deque()
        self._errors: deque[tuple[str, int]] = deque()
        self.dropped_errors = 0
        """Complaints dropped because `ERROR_BACKLOG` were already waiting."""
        self._sent: deque[tuple[float, int]] = deque()  # (time, bytes) of sends in the last WINDOW
        self._sent_bytes = 0
        self._limited = profile.max_bytes_per_second is not None or profile.max_messages_per_second is not None
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        """Messages queued and not yet sent."""
        return len(self._control) + len(self._chat) + len(self._errors)

    def push_control(self, message: str) -> None:
        """Queue an encoded ack or event ahead of any chat; never raises.

        A message too large for the transport is shrunk (`fit_control`) or, failing that, dropped.
        """
        fitted = self._fit(message)
        if fitted is not None:
            self._push(self._control, [fitted])

    def push_complaint(self, message: str) -> None:
        """Queue an encoded error event that answers malformed input: after chat, a few at most; never raises."""
        fitted = self._fit(message)
        if fitted is None:
            return
        if len(self._errors) >= ERROR_BACKLOG:
            self.dropped_errors += 1
            return
        self._push(self._errors, [fitted])

    def _fit(self, message: str) -> str | None:
        fitted = fit_control(message, self.profile)
        if fitted is None:
            log.warning(
                "dropped a %d-byte control message that cannot fit %s", message_size(message), self.profile.name
            )
        return fitted

    def push_chat(self, messages: Iterable[str]) -> None:
        """Queue encoded chat chunks (e.g. from `split_chat`) in order; dropped once closed."""
        self._push(self._chat, messages)

    def next_delay(self) -> float | None:
        """Seconds until the next queued message may go (0: now); None when nothing is queued."""
        head = self._head()
        return None if head is None else self._delay(head[1], self._clock())

    def pump(self) -> int:
        """Send every queued message the limits allow right now; how many were sent."""
        count = 0
        while not self._closed and (head := self._head()) is not None:
            now = self._clock()
            if self._delay(head[1], now) > 0:
                break
            (self._control or self._chat or self._errors).popleft()
            if self._limited:
                self._sent.append((now, head[1]))
                self._sent_bytes += head[1]
            self._send(head[0])
            count += 1
        return count

    async def run(self) -> None:
        """Send queued messages as the limits allow until `aclose()`; exceptions from `send` propagate."""
        while not self._closed:
            self.pump()
            delay = self.next_delay()
            if delay is None:
                self._wakeup.clear()
                await self._wakeup.wait()
            elif delay > 0:
                await self._sleep(delay)

    async def aclose(self) -> None:
        """Stop: drop what is queued; `run()` returns at once if idle, else when its pause (< WINDOW) ends."""
        self._closed = True
        self._control.clear()
        self._chat.clear()
        self._errors.clear()
        self._wakeup.set()

    def _push(self, queue: deque[tuple[str, int]], messages: Iterable[str]) -> None:
        # Check every message before queueing any: a refused batch leaves no half message behind.
        sized = [(m, message_size(check_fits(m, self.profile))) for m in messages]
        if self._closed or not sized:
            return
        queue.extend(sized)
        self._wakeup.set()

    def _head(self) -> tuple[str, int] | None:
        queue = self._control or self._chat or self._errors
        return queue[0] if queue else None

    def _delay(self, size: int, now: float) -> float:
        """Seconds until a `size`-byte message fits both rate limits over the sliding window."""
        if not self._limited:
            return 0.0
        sent = self._sent
        while sent and now - sent[0][0] >= WINDOW:
            self._sent_bytes -= sent.popleft()[1]
        max_bytes = self.profile.max_bytes_per_second
        max_count = self.profile.max_messages_per_second
        over_bytes = 0 if max_bytes is None else self._sent_bytes + size - max_bytes
        over_count = 0 if max_count is None else len(sent) + 1 - max_count
        if over_bytes <= 0 and over_count <= 0:
            return 0.0
        # Wait until enough of the oldest sends leave the window.
        freed = 0
        for n, (sent_at, nbytes) in enumerate(sent, start=1):
            freed += nbytes
            if freed >= over_bytes and n >= over_count:
                return sent_at + WINDOW - now + _MARGIN
        raise AssertionError("unreachable: a single message always fits an empty window")
