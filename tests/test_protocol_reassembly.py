"""ChatAssembler: chunked chat from clients, in any order, with duplicates, gaps and limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.errors import Code
from liveavatar.protocol import ChatAssembler, ChatChunk, ProtocolError, parse
from liveavatar.protocol.reassembly import join_surrogates

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Plenty of the characters that break naive code: quotes, backslashes, controls, CJK, emoji, ZWJ.
tricky_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"])
    | st.sampled_from(
        ['"', "\\", "\n", "\x00", "\x1f", "\u2028", "中", "文", "😀", "👩", "\u200d", "💻", "é", "\ufeff"]
    ),
    max_size=200,
)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunks_of(mid: str, pieces: list[str]) -> list[ChatChunk]:
    return [ChatChunk(mid, i, i == len(pieces) - 1, p) for i, p in enumerate(pieces)]


def feed(assembler: ChatAssembler, chunks: list[ChatChunk]) -> list[str | None]:
    return [assembler.add(c) for c in chunks]


def client_message(chunk: ChatChunk) -> str:
    """What a JavaScript client sends: JSON.stringify escapes lone surrogates as \\uXXXX."""
    msg = {
        "v": 2,
        "type": "chat",
        "mid": chunk.mid,
        "idx": chunk.idx,
        "fin": chunk.fin,
        "pld": {"text": chunk.text},
    }
    return json.dumps(msg, ensure_ascii=True)


@st.composite
def delivered(draw: st.DrawFn, pieces: list[str], mid: str = "m") -> list[ChatChunk]:
    """The chunks of one message in a random order, some of them delivered twice."""
    chunks = chunks_of(mid, pieces)
    order = draw(st.permutations(chunks))
    dups = draw(st.lists(st.sampled_from(chunks), max_size=4)) if chunks else []
    out = list(order)
    for dup in dups:
        out.insert(draw(st.integers(0, len(out))), dup)
    return out


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@PROPERTY
@given(st.data(), tricky_text)
def test_any_split_any_order_with_duplicates_reassembles_exactly(data: st.DataObject, text: str) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))  # repeats give empty chunks
    pieces = split_at(text, cuts)
    assembler = ChatAssembler(clock=FakeClock())
    results = feed(assembler, data.draw(delivered(pieces)))
    assert [r for r in results if r is not None] == [text]
    # The text comes when the last missing chunk arrives; everything after it is ignored.
    first_done = next(i for i, r in enumerate(results) if r is not None)
    assert all(r is None for r in results[first_done + 1 :])
    assert assembler.pending == 0


@PROPERTY
@given(st.data(), tricky_text)
def test_javascript_utf16_splits_are_rejoined(data: st.DataObject, text: str) -> None:
    """JS clients cut with `slice` on UTF-16 code units, which can part an emoji's surrogate pair."""
    units = text.encode("utf-16-le")
    n_units = len(units) // 2
    cuts = sorted(data.draw(st.lists(st.integers(0, n_units), max_size=12)))
    bounds = [0, *cuts, n_units]
    pieces = [
        units[2 * a : 2 * b].decode("utf-16-le", "surrogatepass") for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    assembler = ChatAssembler()
    texts = []
    for chunk in data.draw(delivered(pieces, mid="js-1")):
        parsed = parse(client_message(chunk))
        assert isinstance(parsed, ChatChunk)
        texts.append(assembler.add(parsed))
    assert [t for t in texts if t is not None] == [text]


@PROPERTY
@given(st.data(), st.lists(tricky_text, min_size=1, max_size=5))
def test_interleaved_messages_reassemble_independently(data: st.DataObject, texts: list[str]) -> None:
    streams = []
    for n, text in enumerate(texts):
        cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=4))
        streams.append(chunks_of(f"mid-{n}", split_at(text, cuts)))
    # Interleave while keeping each message's own order arbitrary too.
    pool = [c for s in streams for c in s]
    assembler = ChatAssembler()
    done = {}
    for chunk in data.draw(st.permutations(pool)):
        result = assembler.add(chunk)
        if result is not None:
            done[chunk.mid] = result
    assert done == {f"mid-{n}": t for n, t in enumerate(texts)}


def test_single_chunk_completes_at_once() -> None:
    assembler = ChatAssembler()
    assert assembler.add(ChatChunk("a", 0, True, "hello")) == "hello"
    assert assembler.pending == 0


def test_gap_waits_for_the_missing_chunk() -> None:
    assembler = ChatAssembler()
    assert assembler.add(ChatChunk("a", 0, False, "one ")) is None
    assert assembler.add(ChatChunk("a", 2, True, "three")) is None
    assert assembler.pending == 1
    assert assembler.add(ChatChunk("a", 1, False, "two ")) == "one two three"


def test_duplicate_idx_keeps_the_first_text() -> None:
    assembler = ChatAssembler()
    assert assembler.add(ChatChunk("a", 0, False, "first ")) is None
    assert assembler.add(ChatChunk("a", 0, False, "SECOND ")) is None
    assert assembler.add(ChatChunk("a", 1, True, "end")) == "first end"


def test_chunks_for_a_completed_mid_are_ignored() -> None:
    assembler = ChatAssembler()
    assert feed(assembler, chunks_of("a", ["x", "y"])) == [None, "xy"]
    assert assembler.add(ChatChunk("a", 1, True, "y")) is None
    assert assembler.add(ChatChunk("a", 0, True, "again")) is None
    assert assembler.pending == 0  # no stray partial was started


def test_completed_mids_are_remembered_only_boundedly() -> None:
    assembler = ChatAssembler(remember=3)
    for mid in ["a", "b", "c", "d"]:
        assert assembler.add(ChatChunk(mid, 0, True, mid)) == mid
    assert assembler.add(ChatChunk("d", 0, True, "dup")) is None  # still remembered
    assert assembler.add(ChatChunk("a", 0, True, "reused")) == "reused"  # forgotten: a new message


def test_abandoned_partials_expire_after_the_timeout() -> None:
    clock = FakeClock()
    assembler = ChatAssembler(timeout=10.0, clock=clock)
    assembler.add(ChatChunk("old", 0, False, "a"))
    clock.now += 6
    assembler.add(ChatChunk("new", 1, False, "b"))
    assert assembler.expire() == []
    clock.now += 4  # "old" idle for 10 s, "new" for 4 s
    assert assembler.expire() == ["old"]
    assert assembler.pending == 1
    # A late chunk of the dropped message is ignored rather than starting a partial that cannot finish.
    assert assembler.add(ChatChunk("old", 1, True, "z")) is None
    assert assembler.pending == 1
    clock.now += 5
    assembler.add(ChatChunk("new", 0, False, "a"))  # activity keeps it alive
    clock.now += 9
    assert assembler.expire() == []
    assert assembler.add(ChatChunk("new", 2, True, "c")) == "abc"


def test_expire_reports_oldest_first() -> None:
    clock = FakeClock()
    assembler = ChatAssembler(timeout=1.0, clock=clock)
    assembler.add(ChatChunk("second", 0, False, ""))
    clock.now -= 0.5  # FakeClock lets us plant an older partial after a newer one
    assembler.add(ChatChunk("first", 0, False, ""))
    clock.now += 5
    assert assembler.expire() == ["first", "second"]


def expect_error(assembler: ChatAssembler, chunk: ChatChunk, reason: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        assembler.add(chunk)
    err = info.value
    assert err.code == Code.PARAM_ERROR
    assert (err.msg_type, err.mid, err.cmd) == ("chat", chunk.mid, None)
    assert err.msg == reason
    return err


def test_message_over_max_bytes_is_dropped_with_an_error() -> None:
    assembler = ChatAssembler(max_bytes=10)
    assert assembler.add(ChatChunk("ok", 0, True, "é" * 5)) == "é" * 5  # exactly 10 bytes
    assembler.add(ChatChunk("big", 0, False, "12345"))
    assembler.add(ChatChunk("big", 1, False, "1234"))
    expect_error(assembler, ChatChunk("big", 2, False, "é"), "chat message 'big' is longer than 10 bytes")
    assert assembler.pending == 0
    assert assembler.add(ChatChunk("big", 3, True, "")) is None  # the rest of it is ignored
    assert assembler.pending == 0
    expect_error(assembler, ChatChunk("one", 0, True, "x" * 11), "chat message 'one' is longer than 10 bytes")


def test_too_many_partials_rejects_the_new_message() -> None:
    assembler = ChatAssembler(max_partials=2)
    assembler.add(ChatChunk("a", 0, False, "a"))
    assembler.add(ChatChunk("b", 1, True, "b"))
    expect_error(assembler, ChatChunk("c", 0, False, "c"), "too many unfinished chat messages (max 2)")
    assert assembler.add(ChatChunk("c", 1, True, "c")) is None  # rejected message stays rejected
    assert assembler.add(ChatChunk("solo", 0, True, "fits")) == "fits"  # needs no partial slot
    assert assembler.add(ChatChunk("a", 1, True, "!")) == "a!"
    assert assembler.add(ChatChunk("d", 0, False, "d")) is None  # a slot is free again
    assert assembler.pending == 2


def test_idx_beyond_max_chunks_is_an_error() -> None:
    assembler = ChatAssembler(max_chunks=4)
    assembler.add(ChatChunk("a", 0, False, "a"))
    expect_error(assembler, ChatChunk("a", 4, True, "x"), "chat message 'a' has too many chunks (idx 4, max 3)")
    assert assembler.pending == 0


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        (
            ChatChunk("a", 2, True, ""),
            ChatChunk("a", 3, True, ""),
            "chat message 'a' has conflicting fin (chunk 3)",
        ),
        (
            ChatChunk("a", 2, True, ""),
            ChatChunk("a", 1, True, ""),
            "chat message 'a' has conflicting fin (chunk 1)",
        ),
        (
            ChatChunk("a", 3, False, ""),
            ChatChunk("a", 1, True, ""),
            "chat message 'a' has conflicting fin (chunk 1)",
        ),
        (
            ChatChunk("a", 1, True, ""),
            ChatChunk("a", 5, False, ""),
            "chat message 'a' has chunk 5 after its fin 1",
        ),
    ],
)
def test_inconsistent_fin_is_an_error(first: ChatChunk, second: ChatChunk, reason: str) -> None:
    assembler = ChatAssembler()
    assert assembler.add(first) is None
    expect_error(assembler, second, reason)
    assert assembler.pending == 0


def test_long_mids_are_cut_short_in_reasons() -> None:
    assembler = ChatAssembler(max_bytes=1)
    err = expect_error(
        assembler,
        ChatChunk("m" * 1000, 0, True, "xx"),
        f"chat message {'m' * 37 + '...'!r} is longer than 1 bytes",
    )
    assert err.mid == "m" * 1000


def test_join_surrogates() -> None:
    assert join_surrogates("a\ud83d\ude00b") == "a😀b"
    assert join_surrogates("plain 中文") == "plain 中文"
    assert join_surrogates("x\ud83d") == "x\ufffd"
    assert join_surrogates("\ude00y") == "\ufffdy"


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_partials": 0}, {"timeout": 0.0}, {"remember": 0}])
def test_invalid_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ChatAssembler(**kwargs)  # type: ignore[arg-type]


def test_emoji_cut_in_half_by_a_javascript_client() -> None:
    assembler = ChatAssembler()
    first = parse('{"v":2,"type":"chat","mid":"e","idx":0,"fin":false,"pld":{"text":"hi \\ud83d"}}')
    second = parse('{"v":2,"type":"chat","mid":"e","idx":1,"fin":true,"pld":{"text":"\\ude00!"}}')
    assert isinstance(first, ChatChunk) and isinstance(second, ChatChunk)
    assert first.text == "hi \ud83d"  # a lone surrogate on its own
    assert assembler.add(second) is None
    assert assembler.add(first) == "hi 😀!"
