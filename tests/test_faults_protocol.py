"""Fault suite, protocol layer: bounded reassembly, error events that cannot crowd out replies, acks that always fit."""

from __future__ import annotations

import json

import pytest

from liveavatar.protocol import (
    PROFILES,
    ChatAssembler,
    ChatChunk,
    OutboundPacer,
    ProtocolError,
    ack,
    encode,
    split_chat,
)
from liveavatar.protocol.chunking import ERROR_BACKLOG, fit_control
from liveavatar.protocol.limits import url_problem


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def error_event(n: int) -> str:
    return encode({"v": 2, "type": "event", "pld": {"event": "error", "code": 1003, "msg": f"junk {n} " + "x" * 60}})


# --- finding 5: partial chat reassembly is bounded in bytes per session --------------------------------


def test_unfinished_chat_is_bounded_in_bytes_across_messages() -> None:
    assembler = ChatAssembler()
    piece = "y" * 60_000  # each message alone stays under the 64 KB per-message limit
    refused = 0
    for n in range(16):
        try:
            assembler.add(ChatChunk(f"m{n}", 0, False, piece))
        except ProtocolError as exc:
            refused += 1
            assert "unfinished chat messages" in exc.msg
    assert refused >= 12
    assert assembler.pending_bytes <= 256 * 1024
    # A message that completes frees its bytes: the session keeps taking chat.
    assert assembler.add(ChatChunk("m0", 1, True, "!")) == piece + "!"
    assert assembler.add(ChatChunk("fresh", 0, False, piece)) is None


# --- finding 6: error replies never starve the bot's text on slow profiles ------------------------------


def test_junk_errors_do_not_delay_bot_text_or_acks_on_trtc() -> None:
    profile = PROFILES["trtc"]  # 30 messages/s, 8 KB/s
    clock = FakeClock()
    sent: list[tuple[float, str]] = []
    pacer = OutboundPacer(lambda m: sent.append((clock.now, m)), profile, clock=clock)
    for n in range(300):  # 300 junk messages, each answered by an error event
        pacer.push_complaint(error_event(n))
    chat = split_chat("bot1", "The answer the user waits for. " * 20, "bot", profile)
    pacer.push_chat(chat)
    the_ack = encode(ack("c1", "interrupt"))
    pacer.push_control(the_ack)
    start = clock.now
    while pacer.pending:
        pacer.pump()
        delay = pacer.next_delay()
        if delay:
            clock.now += delay
    sent_at = {message: at for at, message in sent}
    assert sent_at[the_ack] - start < 0.2
    assert max(sent_at[c] for c in chat) - start < 2.0  # ~1 KB of text at 8 KB/s, not 10 s behind errors
    errors = [m for _, m in sent if '"event":"error"' in m]
    assert 1 <= len(errors) <= ERROR_BACKLOG
    assert pacer.dropped_errors == 300 - len(errors)


# --- finding 2: an ack built from client input always fits the transport --------------------------------


@pytest.mark.parametrize("profile", ["agora", "trtc", "webrtc"])
def test_control_messages_are_shrunk_to_fit_never_raised(profile: str) -> None:
    limit = PROFILES[profile].max_message_bytes
    sent: list[str] = []
    pacer = OutboundPacer(sent.append, PROFILES[profile], clock=FakeClock())
    huge_reason = ack("m" * 100, "set-params", 1003, "bgurl: fetching 'http://é" + "é" * 30_000 + "' failed")
    pacer.push_control(encode(huge_reason))
    pacer.push_control(encode(ack("m" * 20_000, "x" * 20_000, 1003, "m")))  # nothing to cut: mid dropped
    pacer.pump()
    assert len(sent) == 2
    assert all(len(m.encode()) <= limit for m in sent)
    first = json.loads(sent[0])
    assert (
        first["mid"] == "m" * 100 and first["pld"]["msg"].startswith("bgurl: fetching") and first["pld"]["code"] == 1003
    )
    assert fit_control("not json" * 3000, PROFILES[profile]) is None


# --- finding 4: URL syntax is checked where URLs enter ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://a:99999/x.png", "malformed"),
        ("http://[::1/x.png", "malformed"),
        (f"http://{'a' * 64}.example/x.png", "invalid label"),
        ("http://a..b/x.png", "empty label"),
        ("http://x:abc/x.png", "malformed"),
        ("http://a:0/x.png", "port 0"),
        ("ftp://a.example/x.png", "http(s)"),
        ("http://[zz::1]/x.png", "IPv6"),
        ("http://1.2.3.999/x.png", "IPv4"),
        ("http://exa mple.com/x.png", "white space"),
        ("http://a.example/\ud800", "Unicode"),
    ],
)
def test_malformed_urls_have_a_reason(url: str, reason: str) -> None:
    problem = url_problem(url)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example/x.png",
        "https://[::1]:8443/x",
        "http://127.0.0.1:80/x",
        "http://bücher.example/x",
        "http://a_b.c/",
    ],
)
def test_well_formed_urls_pass(url: str) -> None:
    assert url_problem(url) is None
