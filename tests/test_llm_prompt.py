"""Prompt building for dialogue mode: system prompt rules, passages, history trimmed to the context."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveavatar.llm import ChatMessage, LLMError, build_messages, estimate_tokens
from liveavatar.llm.prompt import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    PassagesIn,
    language_name,
    system_prompt,
    truncate,
)


def _prompt_tokens(messages: list[ChatMessage]) -> int:
    return sum(estimate_tokens(message.content) + MESSAGE_OVERHEAD for message in messages) + REPLY_OVERHEAD


def _history(turns: int, words: int = 30) -> list[ChatMessage]:
    history: list[ChatMessage] = []
    for turn in range(turns):
        history.append(ChatMessage("user", f"question {turn} " + "word " * words))
        history.append(ChatMessage("assistant", f"answer {turn} " + "reply " * words))
    return history


def test_system_prompt_is_for_speech_and_language() -> None:
    messages = build_messages(
        instructions="You are Anna, the receptionist of Hotel Nord.",
        passages=[],
        language="de",
        history=[],
        user_text="Hallo!",
        context_tokens=2048,
        max_answer_tokens=200,
    )
    assert [m.role for m in messages] == ["system", "user"]
    system = messages[0].content
    assert "spoken aloud" in system
    assert "markdown" in system and "emoji" in system and "lists" in system
    assert "Always answer in German." in system
    assert "You are Anna, the receptionist of Hotel Nord." in system
    assert "Reference passages" not in system
    assert messages[1] == ChatMessage("user", "Hallo!")


def test_no_language_means_the_person_s_language() -> None:
    messages = build_messages(
        instructions="",
        passages=[],
        language=None,
        history=[],
        user_text="Hi",
        context_tokens=1024,
        max_answer_tokens=100,
    )
    assert "the language the person speaks" in messages[0].content


def test_language_names() -> None:
    assert language_name("en") == "English"
    assert language_name("pt-BR") == "Portuguese (pt-BR)"
    assert language_name("zh_CN") == "Chinese (zh-CN)"
    assert language_name("Klingon") == "Klingon"


def test_passages_go_into_the_system_prompt_in_order_with_the_rule() -> None:
    passages = ["Check-in starts at 3 pm.", "Breakfast is served from 7 to 10 am."]
    messages = build_messages(
        instructions="",
        passages=passages,
        language="en",
        history=[],
        user_text="When can I check in?",
        context_tokens=2048,
        max_answer_tokens=200,
    )
    system = messages[0].content
    assert system.index("[1] Check-in starts at 3 pm.") < system.index("[2] Breakfast is served")
    assert "say plainly that you do not have that information" in system
    assert system.startswith(system_prompt("", "en"))  # the fixed part comes first: a cacheable prefix
    assert messages[-1] == ChatMessage("user", "When can I check in?")


def test_history_is_trimmed_oldest_first_and_everything_fits() -> None:
    history = _history(60)
    messages = build_messages(
        instructions="Be nice.",
        passages=[],
        language="en",
        history=history,
        user_text="And now?",
        context_tokens=1024,
        max_answer_tokens=200,
    )
    kept = messages[1:-1]
    assert 2 <= len(kept) < len(history)
    assert kept == history[len(history) - len(kept) :]  # the most recent ones, in order
    assert kept[0].role == "user"
    assert _prompt_tokens(messages) + 200 <= 1024


def test_passages_leave_room_for_recent_history() -> None:
    passages = ["fact " * 200 for _ in range(10)]
    messages = build_messages(
        instructions="",
        passages=passages,
        language="en",
        history=_history(5, words=10),
        user_text="Tell me.",
        context_tokens=2048,
        max_answer_tokens=200,
    )
    system = messages[0].content
    assert "[1] fact" in system
    assert "[10]" not in system
    assert len(messages) > 2, "the last exchange survives beside the passages"
    assert _prompt_tokens(messages) + 200 <= 2048


def test_passages_take_the_room_history_does_not_need() -> None:
    passages = [f"passage {index} " + "fact " * 100 for index in range(10)]

    def build(history: list[ChatMessage]) -> list[ChatMessage]:
        return build_messages(
            instructions="",
            passages=passages,
            language="en",
            history=history,
            user_text="Tell me.",
            context_tokens=2048,
            max_answer_tokens=200,
        )

    alone, with_history = build([]), build(_history(20))
    assert alone[0].content.count("passage ") > with_history[0].content.count("passage ") >= 1
    assert _prompt_tokens(alone) + 200 <= 2048


def test_passages_in_their_own_turn_keep_a_stable_prefix() -> None:
    history = _history(4)

    def build(passages: list[str], user_text: str) -> list[ChatMessage]:
        return build_messages(
            instructions="You are Anna.",
            passages=passages,
            language="en",
            history=history,
            user_text=user_text,
            context_tokens=2048,
            max_answer_tokens=200,
            passages_in="turn",
        )

    one = build(["The pool opens at 7 am."], "When does the pool open?")
    two = build(["Breakfast is at 8 am.", "The bar closes at midnight."], "And breakfast?")
    none = build([], "Thanks!")
    assert one[:-2] == two[:-2] == none[:-1]  # system prompt and history: the same prefix every turn
    assert one[0].content == system_prompt("You are Anna.", "en")
    assert one[-2].role == "system" and one[-2].content.startswith("Use the reference passages")
    assert one[-2].content.endswith("Reference passage:\nThe pool opens at 7 am.")  # one passage: no "[1]" to echo
    assert one[-1] == ChatMessage("user", "When does the pool open?")
    assert none[-1] == ChatMessage("user", "Thanks!")
    assert _prompt_tokens(two) + 200 <= 2048


def test_turn_layout_without_history_is_one_system_message() -> None:
    messages = build_messages(
        instructions="",
        passages=["A fact."],
        language="en",
        history=[ChatMessage("user", "Wait")],
        user_text="Hm?",
        context_tokens=1024,
        max_answer_tokens=100,
        passages_in="turn",
    )
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content.endswith("Reference passage:\nA fact.")
    assert messages[1].content == "Wait\nHm?"


def test_an_oversized_best_passage_is_cut_not_dropped() -> None:
    messages = build_messages(
        instructions="",
        passages=["start of a long manual " + "detail " * 3000],
        language="en",
        history=[],
        user_text="What does the manual say?",
        context_tokens=1024,
        max_answer_tokens=100,
    )
    assert "Reference passage:\nstart of a long manual" in messages[0].content
    assert _prompt_tokens(messages) + 100 <= 1024


def test_a_question_too_long_for_the_context_keeps_its_end() -> None:
    question = "blah " * 2000 + "so what is the answer?"
    messages = build_messages(
        instructions="Persona " * 500,
        passages=["a passage"],
        language="en",
        history=_history(3),
        user_text=question,
        context_tokens=512,
        max_answer_tokens=100,
    )
    assert messages[-1].content.endswith("so what is the answer?")
    assert _prompt_tokens(messages) + 100 <= 512


def test_unanswered_turn_and_leading_assistant_merge_into_alternation() -> None:
    history = [
        ChatMessage("assistant", "Welcome!"),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello, how can I help?"),
        ChatMessage("system", "ignored"),
        ChatMessage("user", "Wait"),  # interrupted before the avatar answered
    ]
    messages = build_messages(
        instructions="",
        passages=[],
        language="en",
        history=history,
        user_text="Where is the pool?",
        context_tokens=2048,
        max_answer_tokens=100,
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1].content == "Wait\nWhere is the pool?"
    assert all("ignored" not in m.content for m in messages)


def test_exact_counter_is_used() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    build_messages(
        instructions="",
        passages=["one two"],
        language="en",
        history=_history(2),
        user_text="hi",
        context_tokens=4096,
        max_answer_tokens=100,
        count_tokens=count,
    )
    assert "hi" in calls


def test_context_without_room_is_an_error() -> None:
    with pytest.raises(LLMError) as info:
        build_messages(
            instructions="",
            passages=[],
            language="en",
            history=[],
            user_text="hi",
            context_tokens=256,
            max_answer_tokens=250,
        )
    assert info.value.code == 1218
    assert info.value.retryable is False


def test_truncate() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta"
    start = truncate(text, 4)
    assert text.startswith(start) and estimate_tokens(start) <= 4 and start
    end = truncate(text, 4, keep_end=True)
    assert text.endswith(end) and estimate_tokens(end) <= 4 and end
    assert truncate(text, 100) == text
    assert truncate(text, 0) == ""


def test_estimate_grows_with_words_digits_and_scripts() -> None:
    assert estimate_tokens("") == 0
    assert 1 <= estimate_tokens("hello") < estimate_tokens("hello there") < estimate_tokens("hello there 2024")
    assert estimate_tokens("你好吗") >= 6  # CJK: at least two per character
    assert estimate_tokens("Привет") >= 6


@settings(max_examples=60, deadline=None)
@given(
    turns=st.integers(0, 40),
    words=st.integers(0, 80),
    passages=st.lists(st.text(min_size=0, max_size=600), max_size=6),
    question=st.text(min_size=1, max_size=3000),
    context=st.sampled_from([512, 1024, 2048]),
    passages_in=st.sampled_from(["system", "turn"]),
)
def test_prompt_always_fits(
    turns: int, words: int, passages: list[str], question: str, context: int, passages_in: PassagesIn
) -> None:
    messages = build_messages(
        instructions="You are a helpful guide.",
        passages=passages,
        language="fr",
        history=_history(turns, words),
        user_text=question,
        context_tokens=context,
        max_answer_tokens=128,
        passages_in=passages_in,
    )
    assert messages[0].role == "system" and messages[-1].role == "user"
    assert _prompt_tokens(messages) + 128 <= context
    roles = [m.role for m in messages]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
    if passages_in == "system":
        assert "system" not in roles[1:]
