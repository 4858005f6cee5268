"""Wrappers that satisfy the LLM Protocol: time limits and retries around any backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from liveavatar.llm.base import LLM, ChatMessage, LLMError, aclose_iterator

log = logging.getLogger(__name__)


class Wrapper:
    """What every wrapper shares: all but `stream` is the wrapped backend's."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    @property
    def supports_images(self) -> bool:
        """Whether the wrapped backend uses images."""
        return self.llm.supports_images

    @property
    def context_tokens(self) -> int:
        """The wrapped backend's context window."""
        return self.llm.context_tokens

    def count_tokens(self, text: str) -> int:
        """The wrapped backend's count."""
        return self.llm.count_tokens(text)

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.llm.aclose()


class WithTimeout(Wrapper):
    """Fail with LLMError when the first token, or the whole answer, takes too long."""

    def __init__(self, llm: LLM, *, first_token_timeout: float, total_timeout: float) -> None:
        super().__init__(llm)
        self.first_token_timeout = first_token_timeout
        self.total_timeout = total_timeout
        """Seconds spent waiting on the backend for one answer; time the consumer holds a delta is not counted."""

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        images: Sequence[bytes] = (),
    ) -> AsyncIterator[str]:
        """The wrapped stream, stopped (and the backend closed) at either limit."""
        loop = asyncio.get_running_loop()
        iterator = self.llm.stream(messages, max_tokens=max_tokens, temperature=temperature, images=images)
        waited = 0.0
        first = True
        try:
            while True:
                limit = self.total_timeout - waited
                if first:
                    limit = min(limit, self.first_token_timeout)
                started = loop.time()
                try:
                    async with asyncio.timeout(limit):
                        delta = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    what = "did not start answering" if first else "did not finish its answer"
                    raise LLMError(f"the language model {what} within {limit:.1f} s") from exc
                waited += loop.time() - started
                first = False
                yield delta
        finally:
            await aclose_iterator(iterator)


class WithRetries(Wrapper):
    """Try again (with exponential backoff) when a retryable LLMError comes before the first token."""

    def __init__(
        self,
        llm: LLM,
        *,
        attempts: int,
        backoff: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        super().__init__(llm)
        self.attempts = attempts
        self.backoff = backoff
        """Seconds before the second attempt; doubled before each further one."""
        self._sleep = sleep

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        images: Sequence[bytes] = (),
    ) -> AsyncIterator[str]:
        """The wrapped stream; once a delta was yielded, an error is raised as is (the user heard part of it)."""
        for attempt in range(1, self.attempts + 1):
            iterator = self.llm.stream(messages, max_tokens=max_tokens, temperature=temperature, images=images)
            started = False
            try:
                async for delta in iterator:
                    started = True
                    yield delta
                return
            except LLMError as exc:
                if started or not exc.retryable:
                    raise
                if attempt == self.attempts:
                    if attempt == 1:
                        raise
                    raise LLMError(f"{exc.msg} (after {attempt} attempts)", retryable=True) from exc
                log.warning("LLM attempt %d of %d failed, trying again: %s", attempt, self.attempts, exc.msg)
            finally:
                await aclose_iterator(iterator)
            await self._sleep(self.backoff * 2 ** (attempt - 1))
