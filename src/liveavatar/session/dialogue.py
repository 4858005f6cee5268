"""Dialogue mode: the avatar answers through an LLM, grounded in the session's knowledge base."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from liveavatar.errors import Code
from liveavatar.knowledge.excerpt import excerpts
from liveavatar.knowledge.index import IndexCache
from liveavatar.llm import LLM, ChatMessage, LLMError, LLMSettings, build_messages
from liveavatar.llm.base import aclose_iterator
from liveavatar.media import Timing, untimed
from liveavatar.session.turn import Failure, Sentence, TextDelta, TextSource
from liveavatar.speech.text import SentenceSplitter

log = logging.getLogger(__name__)
FALLBACK = "Sorry, I can't answer that right now. Please try again in a moment."
"""Spoken when the LLM fails, so the user is never left in silence."""
PASSAGES = 4
"""Passages for a served model (`openai` backend): big models read whole passages quickly and well."""
LOCAL_PASSAGES = 1
"""Passages for the local model, as excerpts: on the grounded-QA bench (30 questions) SmolLM2-135M answered
80-83% right from the best passage alone, 67% from two and 53% from three (it takes a fact from the wrong
one), and every prompt token delays its first word (bench/answers.py)."""
EXCERPT_WORDS = 50
"""Words of each passage in the local model's prompt: its sentences that match the question best."""


class Retriever(Protocol):
    """Finds the passages of a knowledge base that answer a question."""

    async def search(self, kb_id: str, query: str, k: int) -> list[str]:
        """The best `k` passages' texts, best first (empty when the base has none)."""
        ...


class IndexRetriever:
    """Retrieval from the indexes the ingestion built (each loaded once, searched off the event loop)."""

    def __init__(self, indexes: IndexCache) -> None:
        self._indexes = indexes

    async def search(self, kb_id: str, query: str, k: int) -> list[str]:
        """The best `k` passages of the base, best first."""
        index = await self._indexes.aget(kb_id)
        if index is None:
            return []
        return [passage.text for passage in await index.asearch(query, k)]


@dataclass(frozen=True)
class Knowledge:
    """The knowledge base a session answers from."""

    kb_id: str
    prompt: str = ""
    prologue: str = ""


@dataclass(frozen=True)
class Brain:
    """What every session's dialogue shares: the LLM (loaded once per process) and retrieval."""

    llm: LLM
    settings: LLMSettings
    retriever: Retriever | None = None


@dataclass
class Dialogue:
    """One session's side of the conversation: history (only what the user heard) and grounded answers."""

    brain: Brain
    knowledge: Knowledge | None = None
    history: list[ChatMessage] = field(default_factory=list)
    last_passages: list[str] = field(default_factory=list)
    """The passages retrieved for the latest question (shown by the transcript endpoint)."""
    passages: int | None = None
    """Passages retrieved for each question; None: LOCAL_PASSAGES for the local backend, PASSAGES otherwise."""
    excerpt_words: int | None = None
    """Words of each passage in the prompt (0: whole passages); None: EXCERPT_WORDS for the local backend, whole
    passages otherwise."""
    timing: Timing = untimed
    """Reports the stages of each answer: retrieval, prompt_build, llm_first_token, first_clause (first token ->
    first complete clause or sentence)."""

    async def answer(self, user_text: str, *, language: str | None, image: bytes | None) -> TextSource:
        """The answer as a text stream: each LLM delta as generated, each sentence as soon as it is complete."""
        local = self.brain.settings.backend == "local"
        words = self.excerpt_words if self.excerpt_words is not None else EXCERPT_WORDS if local else 0
        started = time.perf_counter()
        passages = await self._retrieve(user_text, self.passages or (LOCAL_PASSAGES if local else PASSAGES))
        retrieved = time.perf_counter()
        self.timing("retrieval", retrieved - started)
        messages = build_messages(
            instructions=self.knowledge.prompt if self.knowledge else "",
            passages=excerpts(passages, user_text, words) if words else passages,
            language=language,
            history=self.history,
            user_text=user_text,
            context_tokens=self.brain.llm.context_tokens,
            max_answer_tokens=self.brain.settings.max_tokens,
            count_tokens=self.brain.llm.count_tokens,
            # Local: passages in a message of their own keep the prefix stable for llama.cpp's state cache.
            passages_in="turn" if local else "system",
        )
        asked = time.perf_counter()
        self.timing("prompt_build", asked - retrieved)
        splitter = SentenceSplitter(first_clause=True)  # the first sound comes at the first clause
        images = [image] if image is not None and self.brain.llm.supports_images else []
        first_token: float | None = None  # when the first non-blank delta came
        clause_done = False
        try:
            stream = self.brain.llm.stream(
                messages,
                max_tokens=self.brain.settings.max_tokens,
                temperature=self.brain.settings.temperature,
                images=images,
            )
            try:
                async for delta in stream:
                    if first_token is None and delta.strip():
                        first_token = time.perf_counter()
                        self.timing("llm_first_token", first_token - asked)
                    yield TextDelta(delta)
                    for sentence in splitter.feed(delta):
                        if not clause_done and first_token is not None:
                            clause_done = True
                            self.timing("first_clause", time.perf_counter() - first_token)
                        yield Sentence(sentence, shown=True)
            finally:  # closed with the answer (an interrupt): the LLM stops at its next token, not when collected
                await aclose_iterator(stream)
        except LLMError as exc:
            log.warning("LLM failed: %s", exc.msg)
            yield Failure(Code.PROCESSING_ERROR, f"the language model failed: {exc.msg}")
            if first_token is None:
                yield TextDelta(FALLBACK)
                yield Sentence(FALLBACK, shown=True)
                return
        rest = splitter.flush()
        if rest:
            if not clause_done and first_token is not None:
                self.timing("first_clause", time.perf_counter() - first_token)
            yield Sentence(rest, shown=True)

    async def _retrieve(self, query: str, k: int) -> list[str]:
        self.last_passages = []
        if self.knowledge is None or self.brain.retriever is None:
            return []
        try:
            self.last_passages = await self.brain.retriever.search(self.knowledge.kb_id, query, k)
        except Exception:
            log.exception("retrieval from knowledge base %s failed", self.knowledge.kb_id)
        return self.last_passages

    def remember(self, user_text: str | None, heard: str) -> None:
        """Record a finished exchange (or the prologue): the answer only as far as the user heard it."""
        if user_text:
            self.history.append(ChatMessage("user", user_text))
        if heard:
            self.history.append(ChatMessage("assistant", heard))
        # The prompt builder trims to the context; this only bounds memory over a long session.
        del self.history[: max(0, len(self.history) - 64)]
