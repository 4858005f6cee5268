"""Outbound chunking within transport limits, and pacing within transport rates."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.protocol import (
    AUDIO_START,
    DEFAULT_PROFILE,
    PROFILES,
    ChatAssembler,
    ChatChunk,
    MessageTooLarge,
    OutboundPacer,
    Sender,
    TransportProfile,
    ack,
    chat,
    check_fits,
    encode,
    event,
    fits,
    message_size,
    parse,
    split_chat,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tricky_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"])
    | st.sampled_from(['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "\u2028", "中", "😀", "é", "\ufeff"]),
    max_size=2500,
)
senders: st.SearchStrategy[Sender] = st.sampled_from(["bot", "user"])

# A tight profile so that examples hit every limit quickly.
TINY = TransportProfile("tiny", 128, max_bytes_per_second=300, max_messages_per_second=3)
PACED = [PROFILES["agora"], PROFILES["trtc"], TINY]


def test_profiles_match_the_spec() -> None:
    assert PROFILES["agora"] == TransportProfile("agora", 1024, 6 * 1024, None)
    assert PROFILES["trtc"] == TransportProfile("trtc", 1024, 8 * 1024, 30)
    assert PROFILES["livekit"] == TransportProfile("livekit", 15 * 1024, None, None)
    assert PROFILES["webrtc"] == TransportProfile("webrtc", 15 * 1024, None, None)
    assert DEFAULT_PROFILE is PROFILES["webrtc"]
    with pytest.raises(TypeError):
        PROFILES["x"] = TINY  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("x", 100), "max_message_bytes must be >= 128"),
        (("x", 1024, 1000), "max_bytes_per_second must be >= max_message_bytes"),
        (("x", 1024, None, 0), "max_messages_per_second must be >= 1"),
    ],
)
def test_profile_validation(args: tuple[str, int], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        TransportProfile(*args)


# --- split_chat -------------------------------------------------------------------------------------


def check_split(mid: str, text: str, from_: Sender, profile: TransportProfile) -> list[str]:
    """Assert everything split_chat promises; returns the messages."""
    messages = split_chat(mid, text, from_, profile)
    chunks = []
    for n, message in enumerate(messages):
        assert message_size(message) <= profile.max_message_bytes
        assert fits(message, profile)
        decoded = json.loads(message)
        assert decoded["pld"]["from"] == from_
        chunk = parse(message.encode("utf-8"))
        assert chunk == ChatChunk(mid, n, n == len(messages) - 1, decoded["pld"]["text"])
        chunks.append(chunk)
    assert "".join(c.text for c in chunks) == text
    return messages


@PROPERTY
@given(
    text=tricky_text,
    mid=st.text(max_size=30),
    from_=senders,
    profile=st.sampled_from(list(PROFILES.values())),
    seed=st.integers(),
)
def test_split_chat_fits_and_reassembles(
    text: str, mid: str, from_: Sender, profile: TransportProfile, seed: int
) -> None:
    messages = check_split(mid, text, from_, profile)
    shuffled = list(messages)
    random.Random(seed).shuffle(shuffled)
    assembler = ChatAssembler()
    results = []
    for message in shuffled:
        chunk = parse(message)
        assert isinstance(chunk, ChatChunk)
        results.append(assembler.add(chunk))
    assert [r for r in results if r is not None] == [text]


@PROPERTY
@given(text=tricky_text, mid=st.text(max_size=10), from_=senders)
def test_split_chat_fills_each_message(text: str, mid: str, from_: Sender) -> None:
    """Greedy and tight: one more character would have overflowed every non-final chunk."""
    profile = TransportProfile("small", 128)
    messages = check_split(mid, text, from_, profile)
    pos = 0
    for idx, message in enumerate(messages[:-1]):
        piece = json.loads(message)["pld"]["text"]
        pos += len(piece)
        bigger = encode(chat(mid, idx, False, piece + text[pos], from_))
        assert message_size(bigger) > profile.max_message_bytes


def test_split_chat_worst_case_text_on_agora() -> None:
    text = ('\x00😀"中\\a\n' * 15_000)[:100_000]
    messages = check_split("bot-1", text, "bot", PROFILES["agora"])
    json_bytes = message_size(json.dumps(text, ensure_ascii=False))
    assert len(messages) <= json_bytes // (1024 - 100) + 1  # envelopes are small: chunks are well filled


def test_split_chat_empty_and_short_texts_are_one_message() -> None:
    assert split_chat("m", "", "bot") == [
        '{"v":2,"type":"chat","mid":"m","idx":0,"fin":true,"pld":{"from":"bot","text":""}}'
    ]
    assert len(split_chat("m", "x" * 15_000, "user")) == 1  # default webrtc profile: 15 KiB


def test_split_chat_keeps_surrogate_pairs_together() -> None:
    """Text that still holds a raw UTF-16 pair (two code points) is never cut between them."""
    profile = TransportProfile("small", 128)
    envelope = message_size(encode(chat("m", 0, False, "", "bot")))
    for pad in range(profile.max_message_bytes - envelope - 14, profile.max_message_bytes - envelope + 2):
        text = "a" * pad + "\ud83d\ude00" * 3 + "tail" * 40
        messages = split_chat("m", text, "bot", profile)
        assert all(message_size(m) <= profile.max_message_bytes for m in messages)
        # On the wire the pair is two escapes; a receiver decodes them as the one emoji they are.
        texts = [json.loads(m)["pld"]["text"] for m in messages]
        assert not any("\ud800" <= c <= "\udfff" for t in texts for c in t)
        assert "".join(texts) == "a" * pad + "😀" * 3 + "tail" * 40


def test_split_chat_escapes_lone_surrogates() -> None:
    text = "x\ud83d" * 100
    messages = check_split("m", text, "bot", TransportProfile("small", 128))
    for message in messages:
        message.encode("utf-8")  # would raise on a raw surrogate


def test_split_chat_refuses_a_mid_that_leaves_no_room() -> None:
    with pytest.raises(MessageTooLarge, match="leaves no room"):
        split_chat("m" * 2000, "hello", "bot", PROFILES["agora"])


def test_single_messages_are_checked_against_the_profile() -> None:
    for profile in PROFILES.values():
        for message in (encode(ack("m1", "set-params")), encode(event(AUDIO_START))):
            assert check_fits(message, profile) == message
    long_ack = encode(ack("m1", "set-params", 1003, "x" * 2000))
    assert not fits(long_ack, PROFILES["agora"])
    assert fits(long_ack, PROFILES["livekit"])
    with pytest.raises(MessageTooLarge, match=r"^2083-byte message exceeds agora.s 1024 bytes$"):
        check_fits(long_ack, PROFILES["agora"])


# --- pacing -----------------------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when a test (or the fake sleep) says so."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass(frozen=True)
class Sent:
    at: float
    message: str

    @property
    def size(self) -> int:
        return message_size(self.message)


def assert_within_rates(sent: list[Sent], profile: TransportProfile) -> None:
    """Every sliding window [t, t + 1 s) starting at a send holds the profile's limits."""
    times = [s.at for s in sent]
    assert times == sorted(times)
    for i, first in enumerate(sent):
        window = [s for s in sent[i:] if s.at < first.at + 1.0]
        if profile.max_bytes_per_second is not None:
            assert sum(s.size for s in window) <= profile.max_bytes_per_second
        if profile.max_messages_per_second is not None:
            assert len(window) <= profile.max_messages_per_second


def make_message(kind: str, n: int, size: int) -> str:
    head = f"{kind}-{n:04d}:"
    return head + "x" * (size - len(head))


@st.composite
def workloads(draw: st.DrawFn, profile: TransportProfile) -> list[tuple[float, str, str]]:
    """Messages pushed over time: (at, kind, message)."""
    at = 0.0
    out = []
    for n in range(draw(st.integers(1, 50))):
        at += draw(st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.05, 0.3, 0.999, 1.0, 2.5]))
        kind = draw(st.sampled_from(["control", "chat", "chat"]))
        size = draw(st.integers(16, profile.max_message_bytes))
        out.append((at, kind, make_message(kind, n, size)))
    return out


@PROPERTY
@given(st.data(), st.sampled_from(PACED))
def test_pacer_respects_rates_priority_and_order(data: st.DataObject, profile: TransportProfile) -> None:
    workload = data.draw(workloads(profile))
    clock = FakeClock()
    start = clock.now
    log: list[tuple[str, str]] = []  # ("push" | "send", message), in the order things happened
    sent: list[Sent] = []

    def send(message: str) -> None:
        log.append(("send", message))
        sent.append(Sent(clock.now, message))

    pacer = OutboundPacer(send, profile, clock=clock)
    pushed_at: dict[str, float] = {}
    todo = list(workload)
    while True:
        while todo and start + todo[0][0] <= clock.now:
            _, kind, message = todo.pop(0)
            pushed_at[message] = clock.now
            log.append(("push", message))
            if kind == "control":
                pacer.push_control(message)
            else:
                pacer.push_chat([message])
        pacer.pump()
        delay = pacer.next_delay()
        assert delay is None or delay > 0  # pump() sent everything it could
        wakeups = ([clock.now + delay] if delay is not None else []) + ([start + todo[0][0]] if todo else [])
        if not wakeups:
            break
        clock.now = min(wakeups)

    assert pacer.pending == 0
    assert sorted(s.message for s in sent) == sorted(m for _, _, m in workload)
    assert_within_rates(sent, profile)
    # Each kind keeps its own order.
    for kind in ("control", "chat"):
        assert [s.message for s in sent if s.message.startswith(kind)] == [m for _, k, m in workload if k == kind]
    # Priority: no chat goes out while a control message is waiting.
    waiting: set[str] = set()
    for what, message in log:
        if what == "push" and message.startswith("control"):
            waiting.add(message)
        elif what == "send":
            waiting.discard(message)
            assert not (message.startswith("chat") and waiting)
    # Promptness: a message that waited could not have gone a moment earlier.
    for k, s in enumerate(sent):
        ready = max([pushed_at[s.message]] + ([sent[k - 1].at] if k else []))
        if s.at > ready + 2e-6:
            moment = s.at - 2e-6
            recent = [p for p in sent[:k] if moment - p.at < 1.0]
            over_bytes = (
                profile.max_bytes_per_second is not None
                and sum(p.size for p in recent) + s.size > profile.max_bytes_per_second
            )
            over_count = (
                profile.max_messages_per_second is not None and len(recent) + 1 > profile.max_messages_per_second
            )
            assert over_bytes or over_count


@pytest.mark.parametrize(
    ("profile", "size", "count", "per_second"),
    [(PROFILES["agora"], 1024, 20, 6), (PROFILES["trtc"], 1024, 20, 8), (PROFILES["trtc"], 50, 70, 30)],
)
def test_pacer_uses_the_full_rate(profile: TransportProfile, size: int, count: int, per_second: int) -> None:
    clock = FakeClock()
    sent: list[Sent] = []
    pacer = OutboundPacer(lambda m: sent.append(Sent(clock.now, m)), profile, clock=clock)
    pacer.push_chat(make_message("chat", n, size) for n in range(count))
    while (delay := pacer.next_delay()) is not None:
        clock.now += delay
        pacer.pump()
    assert_within_rates(sent, profile)
    per_window = [sum(1 for s in sent if round(s.at - 500.0) == w) for w in range(count // per_second + 1)]
    assert per_window == [per_second] * (count // per_second) + [count % per_second]


def test_next_delay_and_pump() -> None:
    clock = FakeClock()
    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES["agora"], clock=clock)
    assert pacer.next_delay() is None
    pacer.push_chat(make_message("chat", n, 1024) for n in range(7))
    assert pacer.next_delay() == 0
    assert pacer.pump() == 6
    assert pacer.pending == 1
    clock.now += 0.25
    delay = pacer.next_delay()
    assert delay is not None and 0.75 <= delay < 0.75 + 1e-5
    assert pacer.pump() == 0
    clock.now += delay
    assert pacer.pump() == 1
    assert pacer.next_delay() is None


def test_unlimited_profile_sends_everything_at_once() -> None:
    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES["livekit"], clock=FakeClock())
    messages = split_chat("b", "long answer " * 5000, "bot", PROFILES["livekit"])
    pacer.push_chat(messages)
    pacer.push_control(encode(event(AUDIO_START)))
    assert pacer.pump() == len(messages) + 1
    assert sent == [encode(event(AUDIO_START)), *messages]


def test_push_refuses_oversized_messages() -> None:
    pacer = OutboundPacer(lambda m: None, PROFILES["agora"])
    pacer.push_control("x" * 1025)  # a control message that cannot be shrunk is dropped, never raised
    with pytest.raises(MessageTooLarge):
        pacer.push_chat(["ok", "x" * 2000])
    assert pacer.pending == 0  # nothing of the refused batch was queued


async def until(condition: Callable[[], bool], steps: int = 10_000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_run_paces_a_long_answer_and_lets_acks_jump_the_queue() -> None:
    clock = FakeClock()
    profile = PROFILES["agora"]
    sent: list[Sent] = []
    pacer = OutboundPacer(lambda m: sent.append(Sent(clock.now, m)), profile, clock=clock, sleep=clock.sleep)
    text = "Ein längerer Satz mit Umlauten, 中文 und 😀. " * 500
    chunks = split_chat("bot-9", text, "bot", profile)
    pacer.push_chat(chunks)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(pacer.run())
        await until(lambda: len(sent) >= 3)
        n_before = len(sent)
        control = [encode(ack("m1", "interrupt")), encode(event(AUDIO_START))]
        for message in control:
            pacer.push_control(message)
        await until(lambda: pacer.pending == 0)
        await pacer.aclose()
    assert runner.done() and runner.exception() is None
    order = [s.message for s in sent]
    assert order[n_before : n_before + 2] == control  # next out, ahead of the queued chunks
    assert [m for m in order if m not in control] == chunks
    assert_within_rates(sent, profile)
    assert sent[-1].at - sent[0].at >= sum(s.size for s in sent) / 6144 - 1.0  # really paced
    assembler = ChatAssembler(max_bytes=1 << 20)
    results = [assembler.add(c) for c in (parse(m) for m in chunks) if isinstance(c, ChatChunk)]
    assert results[-1] == text


async def test_aclose_stops_an_idle_run_and_drops_later_pushes() -> None:
    clock = FakeClock()
    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES["agora"], clock=clock, sleep=clock.sleep)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(pacer.run())
        pacer.push_control(encode(event(AUDIO_START)))
        await until(lambda: len(sent) == 1)
        await asyncio.sleep(0)  # run() is now waiting for work
        await pacer.aclose()
        await until(runner.done)
    pacer.push_control(encode(event("late")))
    assert pacer.pending == 0
    assert pacer.pump() == 0
    assert sent == [encode(event(AUDIO_START))]


async def test_aclose_during_a_pause_sends_nothing_more() -> None:
    clock = FakeClock()
    pauses: list[float] = []
    release = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await release.wait()
        clock.now += seconds

    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES["agora"], clock=clock, sleep=slow_sleep)
    pacer.push_chat(make_message("chat", n, 1024) for n in range(10))
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(pacer.run())
        await until(lambda: bool(pauses))
        assert len(sent) == 6 and 1.0 <= pauses[0] < 1.0 + 1e-5
        await pacer.aclose()
        release.set()
        await until(runner.done)
    assert len(sent) == 6


async def test_aclose_drops_queued_messages() -> None:
    clock = FakeClock()
    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES["agora"], clock=clock, sleep=clock.sleep)
    pacer.push_chat(make_message("chat", n, 1024) for n in range(20))
    pacer.pump()
    await pacer.aclose()
    assert pacer.pending == 0
    await asyncio.wait_for(pacer.run(), timeout=5)  # returns at once once closed
    assert len(sent) == 6


async def test_send_errors_propagate_from_run() -> None:
    def send(message: str) -> None:
        raise ConnectionError("data channel closed")

    pacer = OutboundPacer(send, PROFILES["agora"], clock=FakeClock())
    pacer.push_control(encode(event(AUDIO_START)))
    with pytest.raises(ConnectionError, match="data channel closed"):
        await asyncio.wait_for(pacer.run(), timeout=5)
