"""The LLM role: chat messages in, a stream of text deltas out."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from liveavatar.errors import Code, LiveAvatarError

Role = Literal["system", "user", "assistant"]

ESTIMATE_MARGIN: Final = 1.1
_PIECES: Final = re.compile(r"[A-Za-z]+|\s+|[^\sA-Za-z]")
"""ASCII words, whitespace runs, and single characters of anything else."""


class LLMError(LiveAvatarError):
    """The language model failed to answer (unreachable, refused, timed out, broke off)."""

    code = Code.PROCESSING_ERROR
    default_msg = "the language model failed to answer"

    def __init__(self, msg: str | None = None, *, retryable: bool = True) -> None:
        super().__init__(msg)
        self.retryable = retryable
        """Whether trying the same request again may succeed (False for refusals such as HTTP 400/401)."""


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat: who said it and what."""

    role: Role
    content: str


class LLM(Protocol):
    """A chat model backend; one instance per process, shared by all sessions."""

    @property
    def supports_images(self) -> bool:
        """Whether `stream` uses the images it is given (others ignore them)."""
        ...

    @property
    def context_tokens(self) -> int:
        """Context window in tokens: prompt and answer together must fit."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        images: Sequence[bytes] = (),
    ) -> AsyncIterator[str]:
        """Yield the answer as text deltas while it is generated; closing the iterator stops generation."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes (an estimate where the backend has no tokenizer)."""
        ...

    async def aclose(self) -> None:
        """Release what this backend holds (connections); a shared local model stays loaded."""
        ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token count that errs high (checked against SmolLM2's small-vocabulary tokenizer)."""
    count = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isspace():
            count += (len(piece) - 1) // 4  # long runs (indentation) take tokens of their own
        elif first.isascii() and first.isalpha():
            count += 1 + (len(piece) - 1) // 3  # a word: one token per ~3 letters after the first
        elif first.isascii():
            count += 1  # each digit and each symbol
        else:
            count += 1 if ord(first) < 0x800 else 2  # accented/Cyrillic/Greek letters; CJK, Indic and others
    return math.ceil(count * ESTIMATE_MARGIN)


async def aclose_iterator(iterator: AsyncIterator[str]) -> None:
    """Close an async iterator if it can be closed (async generators can), so its cleanup runs now."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
