"""Prompt building for dialogue mode: a system prompt for a spoken avatar, passages, trimmed history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Literal

from liveavatar.llm.base import ChatMessage, LLMError, estimate_tokens

PassagesIn = Literal["system", "turn"]
"""Where retrieved passages go. `system`: at the end of the system prompt (any chat template takes it).
`turn`: a system message of their own just before the user's words, so the system prompt and the history
stay a prefix that llama.cpp (and servers with prefix caching) reuse from turn to turn; some strict
templates (Mistral, Gemma, Qwen3) refuse a system message there. Small models read passages well in either
place, and badly inside the user message (SmolLM2 echoes them), so that layout is not offered."""

MESSAGE_OVERHEAD: Final = 6
"""Tokens a chat template adds around each message (ChatML: `<|im_start|>role\\n` ... `<|im_end|>\\n`)."""
REPLY_OVERHEAD: Final = 4
"""Tokens of the generation prompt that opens the assistant's answer."""
SEPARATOR_TOKENS: Final = 2
"""Tokens of the blank line that joins parts of the system prompt."""
MIN_QUESTION_TOKENS: Final = 16
PASSAGE_SHARE: Final = 0.6
"""Passages get at least this share of the room left after the system prompt and question (more when the
history needs less); history gets the rest, so a follow-up question keeps the exchange it follows."""

SPOKEN_STYLE: Final = (
    "You are a friendly assistant talking with a person through a live video avatar. "
    "Everything you write is spoken aloud by a voice, so answer the way people talk: short, natural, "
    "conversational sentences, usually one to three, getting to the point first. "
    "Never use markdown, bullet points, numbered lists, headings, tables, code, emoji, or links; "
    "say things in plain sentences instead. If a question is unclear, ask one short question back."
)
PASSAGES_RULE: Final = (
    "Use the reference passages below when they are relevant to the question. "
    "If the answer is not in them, say plainly that you do not have that information instead of guessing."
)

LANGUAGE_NAMES: Final = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "nb": "Norwegian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "vi": "Vietnamese", "zh": "Chinese", "cmn": "Mandarin Chinese", "yue": "Cantonese",
}  # fmt: skip


def language_name(language: str) -> str:
    """An English name for a language code (`de` -> German, `pt-BR` -> Portuguese (pt-BR)); names pass through."""
    code = language.strip().replace("_", "-")
    primary = code.split("-", 1)[0].lower()
    name = LANGUAGE_NAMES.get(primary)
    if name is None:
        return code
    return name if code.lower() == primary else f"{name} ({code})"


def system_prompt(instructions: str, language: str | None, passages: Sequence[str] = ()) -> str:
    """The system message: spoken style, answer language, the knowledge base's instructions, then passages."""
    parts = [SPOKEN_STYLE]
    if language:
        parts.append(f"Always answer in {language_name(language)}.")
    else:
        parts.append("Answer in the language the person speaks.")
    if instructions.strip():
        parts.append(instructions.strip())
    return "\n\n".join(parts) + passages_part(passages)


def build_messages(
    *,
    instructions: str,
    passages: Sequence[str],
    language: str | None,
    history: Sequence[ChatMessage],
    user_text: str,
    context_tokens: int,
    max_answer_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
    passages_in: PassagesIn = "system",
) -> list[ChatMessage]:
    """System prompt, as much recent history as fits, then the user's words; prompt + answer fit the context.

    Passages (best first) fill at least PASSAGE_SHARE of the room, whole ones first and the best one cut to
    fit if it alone is too long; history is trimmed oldest-first. Pass the backend's `count_tokens` for exact
    counts; the default estimate errs high. `passages_in="turn"` keeps the system prompt and history a
    stable, cacheable prefix (see PassagesIn).
    """

    def cost(text: str) -> int:
        return count_tokens(text) + MESSAGE_OVERHEAD

    budget = context_tokens - max_answer_tokens - REPLY_OVERHEAD
    head = cost(system_prompt("", language))  # spoken style and language: never cut
    if budget < head + MESSAGE_OVERHEAD + MIN_QUESTION_TOKENS:
        raise LLMError(
            f"a context of {context_tokens} tokens leaves no room for a prompt"
            f" beside {max_answer_tokens} answer tokens",
            retryable=False,
        )
    instructions = instructions.strip()
    if head + SEPARATOR_TOKENS + count_tokens(instructions) + cost(user_text) > budget:
        # Too long even without passages: the question keeps its end and at least half the room, then the
        # instructions keep their start in what is left.
        room = budget - head - MESSAGE_OVERHEAD
        question_room = max(room - count_tokens(instructions) - SEPARATOR_TOKENS, room // 2)
        user_text = truncate(user_text, question_room, count_tokens, keep_end=True)
        instructions = truncate(instructions, room - count_tokens(user_text) - SEPARATOR_TOKENS, count_tokens)
    base = system_prompt(instructions, language)
    free = max(budget - cost(base) - cost(user_text), 0)

    usable = [message for message in history if message.role != "system" and message.content.strip()]
    history_need = sum(cost(message.content) for message in usable)
    passage_room = max(int(free * PASSAGE_SHARE), free - history_need)
    base_tokens = count_tokens(base)

    def passage_cost(trial: Sequence[str]) -> int:
        if passages_in == "turn":
            return cost(passages_part(trial).lstrip())
        return count_tokens(base + passages_part(trial)) - base_tokens

    chosen = _choose_passages(passages, passage_room, passage_cost, count_tokens)
    free -= passage_cost(chosen) if chosen else 0

    kept: list[ChatMessage] = []
    for message in reversed(usable):
        need = cost(message.content)
        if need > free:
            break
        kept.append(message)
        free -= need
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)  # strict chat templates want a user turn right after the system prompt
    if kept and kept[-1].role == "user":
        user_text = f"{kept.pop().content}\n{user_text}"  # an unanswered turn: its words join this one
    if passages_in == "turn":
        late = [ChatMessage("system", passages_part(chosen).lstrip())] if chosen else []
        messages = [ChatMessage("system", base), *kept, *late, ChatMessage("user", user_text)]
    else:
        messages = [ChatMessage("system", base + passages_part(chosen)), *kept, ChatMessage("user", user_text)]
    return _merge_same_roles(messages)


def _choose_passages(
    passages: Sequence[str],
    room: int,
    passage_cost: Callable[[Sequence[str]], int],
    count_tokens: Callable[[str], int],
) -> list[str]:
    """The best passages (in their order) whose cost is at most `room` tokens."""
    chosen: list[str] = []
    for passage in (p for p in passages if p.strip()):
        trial = [*chosen, passage]
        if passage_cost(trial) <= room:
            chosen = trial
        elif not chosen:
            # The best passage alone is too long: its start is better than nothing.
            cut = truncate(passage, room - passage_cost(["x"]), count_tokens)
            if cut:
                chosen = [cut]
            break
        else:
            break
    return chosen


def passages_part(passages: Sequence[str]) -> str:
    """The passages with the rule for using them, as added to the system prompt (nothing for none)."""
    if not passages:
        return ""
    if len(passages) == 1:
        # Unnumbered: small models echo a lone "[1] ..." passage into the spoken answer.
        return f"\n\n{PASSAGES_RULE}\n\nReference passage:\n{passages[0].strip()}"
    numbered = "\n\n".join(f"[{index}] {passage.strip()}" for index, passage in enumerate(passages, 1))
    return f"\n\n{PASSAGES_RULE}\n\nReference passages:\n{numbered}"


def truncate(
    text: str, tokens: int, count_tokens: Callable[[str], int] = estimate_tokens, *, keep_end: bool = False
) -> str:
    """`text` cut (at a word boundary where it can be) to at most `tokens` tokens, keeping its start or its end."""
    if tokens <= 0:
        return ""
    if count_tokens(text) <= tokens:
        return text
    low, high = 0, len(text)  # the longest prefix/suffix length that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        piece = text[len(text) - middle :] if keep_end else text[:middle]
        if count_tokens(piece) <= tokens:
            low = middle
        else:
            high = middle - 1
    piece = text[len(text) - low :] if keep_end else text[:low]
    # Back off to a word boundary unless that would throw away most of the piece.
    if keep_end:
        space = piece.find(" ")
        if 0 <= space < len(piece) // 4:
            piece = piece[space + 1 :]
    else:
        space = piece.rfind(" ")
        if space > len(piece) * 3 // 4:
            piece = piece[:space]
    return piece.strip()


def _merge_same_roles(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Join neighbouring messages of one role (an unanswered turn before this one): templates alternate."""
    merged: list[ChatMessage] = []
    for message in messages:
        if merged and merged[-1].role == message.role:
            merged[-1] = ChatMessage(message.role, f"{merged[-1].content}\n{message.content}")
        else:
            merged.append(message)
    return merged
