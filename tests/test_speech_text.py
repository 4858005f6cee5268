"""Pronunciation maps and sentence splitting (whole text and token by token)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveavatar.speech.text import (
    LONG_SENTENCE,
    LONGEST_WORD,
    VERY_LONG_SENTENCE,
    SentenceSplitter,
    apply_pron_map,
    split_sentences,
)


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _feed_all(fragments: list[str], *, first_clause: bool = False) -> list[str]:
    splitter = SentenceSplitter(first_clause=first_clause)
    sentences: list[str] = []
    for fragment in fragments:
        sentences.extend(splitter.feed(fragment))
    return sentences + splitter.finish()


# --- pron_map ---------------------------------------------------------------------------------------


def test_pron_map_whole_word_case_insensitive() -> None:
    pron = {"sql": "sequel", "AKool": "ay cool"}
    assert apply_pron_map("SQL and Sql, akool! SQLite mysql", pron) == "sequel and sequel, ay cool! SQLite mysql"


def test_pron_map_longest_key_first_and_punctuation_keys() -> None:
    pron = {"New York": "NY", "New York City": "the big apple", "C++": "C plus plus", "e.g.": "for example"}
    text = "New York City is not New York; C++ is fun, e.g. templates."
    assert apply_pron_map(text, pron) == "the big apple is not NY; C plus plus is fun, for example templates."


def test_pron_map_escapes_regex_and_ignores_empty() -> None:
    assert apply_pron_map("a.b axb (x)", {"a.b": "dot", "(x)": "ex", "": "nothing"}) == "dot axb ex"
    assert apply_pron_map("unchanged", None) == "unchanged"
    assert apply_pron_map("unchanged", {}) == "unchanged"


def test_pron_map_values_are_not_rescanned() -> None:
    assert apply_pron_map("cat dog", {"cat": "dog", "dog": "cat"}) == "dog cat"


# --- sentences --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        ("It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
        ("Dr. Smith met Mr. Jones. They talked.", ["Dr. Smith met Mr. Jones.", "They talked."]),
        ("Fruit, e.g. apples, etc. are fine. Yes.", ["Fruit, e.g. apples, etc. are fine.", "Yes."]),
        ("Well... maybe later. Or not…", ["Well... maybe later.", "Or not…"]),
        ("J. R. R. Tolkien wrote it. Really?!", ["J. R. R. Tolkien wrote it.", "Really?!"]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
        ("First line\nsecond line\n\nthird", ["First line", "second line", "third"]),
        ("See example.com for v1.2.3 now", ["See example.com for v1.2.3 now"]),
        ("   ", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_long_sentence_is_cut_at_a_clause_boundary() -> None:
    clause = "this clause goes on and on, "
    text = clause * 20 + "and finally ends."
    sentences = split_sentences(text)
    assert len(sentences) > 1
    assert all(s.endswith(",") for s in sentences[:-1])
    assert all(len(s) <= LONG_SENTENCE + len(clause) for s in sentences)
    assert _no_space("".join(sentences)) == _no_space(text)


def test_very_long_text_without_punctuation_is_cut_at_spaces() -> None:
    text = " ".join(["word"] * 300)
    sentences = split_sentences(text)
    assert len(sentences) > 1
    assert " ".join(sentences) == text


def test_a_run_with_no_space_does_not_hold_up_the_speech() -> None:
    digits = "".join(str(i % 10) for i in range(1000))  # a language model spelling out a number
    sentences = split_sentences(f"The moon is {digits} miles away. Yes.", first_clause=True)
    assert sentences[0] == f"The moon is {digits[:LONGEST_WORD]}"  # the first words, then the sound starts
    assert len(sentences) > 3 and all(len(s) <= VERY_LONG_SENTENCE + LONGEST_WORD for s in sentences)
    assert sentences[-1] == "Yes."
    assert _no_space("".join(sentences)) == _no_space(f"The moon is {digits} miles away. Yes.")
    cjk = "你好世界我们在测试" * 60  # CJK writes no spaces: a long run of it is not cut into words
    assert split_sentences(cjk, first_clause=True) == split_sentences(cjk) == [cjk]


def test_incremental_splitter_waits_for_the_next_word() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It costs 3.") == []
    assert splitter.feed("5 dollars. ") == []  # "dollars." could still be "Dr."-like: wait for the next word
    assert splitter.feed("Then") == ["It costs 3.5 dollars."]
    assert splitter.feed(" we left") == []
    assert splitter.flush() == "Then we left"
    assert splitter.flush() is None


def test_incremental_token_by_token_matches_whole_text() -> None:
    text = "Hello there, Dr. Who! It is 3.14 today... or is it? 你好。 Bye.\nNew line"
    tokens = re.findall(r"\S+|\s+", text)
    assert _feed_all(tokens) == split_sentences(text)
    assert _feed_all(list(text)) == split_sentences(text)


_PIECES = [
    *"aAbBzZ09 .,;:!?…。！？，\n\"')-—",
    "Mr.",
    "3.5",
    "...",
    "e.g.",
    "etc. ",
    "Dr",
    "\u3000",
    " at ",
    " the ",
    "1234567890",
    "你好",
]
_texts = st.lists(st.sampled_from(_PIECES), max_size=80).map("".join)
_long_texts = st.lists(
    st.sampled_from(["word ", "Word ", "3.5 ", "Dr. ", ", ", "; ", "... ", ". ", "x", "\n", "0123456789"]), max_size=150
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_texts, _long_texts))
def test_sentences_keep_the_text(text: str) -> None:
    sentences = split_sentences(text)
    assert _no_space("".join(sentences)) == _no_space(text)
    assert all(s and s == s.strip() for s in sentences)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_texts, _long_texts), st.data())
def test_any_fragmentation_gives_the_same_sentences(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    fragments = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _feed_all(fragments) == split_sentences(text)


# --- a reply's first piece ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, how are you today?", ["Hello,", "how are you today?"]),
        ("Guten Tag, wie geht es Ihnen? Gut.", ["Guten Tag,", "wie geht es Ihnen?", "Gut."]),
        ("Well; that was quick. Yes.", ["Well;", "that was quick.", "Yes."]),
        ("Wait - no, later. Now.", ["Wait -", "no, later.", "Now."]),
        ("Our meeting starts at ten o'clock.", ["Our meeting starts", "at ten o'clock."]),
        ("Thank you for coming to see us.", ["Thank you for coming", "to see us."]),  # never after "for"
        (
            "This is a long answer that keeps going. Then more.",
            ["This is a long answer", "that keeps going.", "Then more."],
        ),
        ("The quick brown fox jumps over the lazy dog.", ["The quick brown fox jumps", "over the lazy dog."]),
        ("I would like a cup of tea, please.", ["I would like a cup of tea,", "please."]),  # a clause soon after
        ("Dr. Smith met Mr. Jones at the station.", ["Dr. Smith met Mr. Jones", "at the station."]),
        ("It costs 3,500 dollars. Fine, thanks.", ["It costs 3,500 dollars.", "Fine, thanks."]),  # later: whole
        ("This is a short test sentence.", ["This is a short test sentence."]),  # short: left whole
        ("Have a wonderful day.", ["Have a wonderful day."]),
        ("你好，我很好！", ["你好，", "我很好！"]),
        ("", []),
    ],
)
def test_a_replys_first_piece_is_its_first_clause_or_first_words(text: str, expected: list[str]) -> None:
    assert split_sentences(text, first_clause=True) == expected
    assert _no_space("".join(expected)) == _no_space(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_texts, _long_texts), st.data())
def test_first_clause_splitting_keeps_the_text_and_ignores_fragmentation(text: str, data: st.DataObject) -> None:
    sentences = split_sentences(text, first_clause=True)
    assert _no_space("".join(sentences)) == _no_space(text)
    assert all(s and s == s.strip() for s in sentences)
    if sentences:  # only the first piece is special
        assert text.lstrip().startswith(sentences[0])
        assert sentences[1:] == split_sentences(text.lstrip()[len(sentences[0]) :])
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    fragments = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _feed_all(fragments, first_clause=True) == sentences
