"""Excerpts: the few sentences of a retrieved passage that answer the question, for a short, fast prompt.

Every prompt token costs the local model prefill time before its first word (~5-10 ms each on one core), and
a small model answers better from the sentence that holds the fact than from a whole 180-word chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from liveavatar.knowledge.index import Analyzer

_SENTENCE_END: Final = re.compile(r"((?<=[.!?;])\s+|\s*\n+\s*)")
"""Sentence (or line: table rows and key: value lines) boundaries."""
_analyzer: Analyzer | None = None


def _terms(text: str) -> set[str]:
    global _analyzer
    if _analyzer is None:
        _analyzer = Analyzer()
    return set(_analyzer.terms(text))


def excerpt(passage: str, query: str, max_words: int) -> str:
    """The passage's sentences that share the most terms with `query`, in their order, within `max_words`.

    Sentences are taken best first (most query terms, then earliest) while they fit, then their neighbours; the
    best one is cut to `max_words` if it alone is longer. A passage with no term of the query (found by meaning)
    keeps its start.
    """
    words = passage.split()
    if len(words) <= max_words:
        return passage.strip()
    pieces = _SENTENCE_END.split(passage.strip())
    sentences = pieces[::2]
    # What follows each sentence: a line break stays one (key: value lines, table rows), anything else a space.
    after = ["\n" if "\n" in separator else " " for separator in pieces[1::2]] + [""]
    wanted = _terms(query)
    scored = sorted(
        ((len(wanted & _terms(sentence)), -index) for index, sentence in enumerate(sentences)), reverse=True
    )
    if not scored or scored[0][0] == 0:
        return " ".join(words[:max_words])
    chosen: list[int] = []
    room = max_words
    for score, negative_index in scored:
        if score == 0:
            break
        length = len(sentences[-negative_index].split())
        if length <= room:
            chosen.append(-negative_index)
            room -= length
        elif not chosen:
            return " ".join(sentences[-negative_index].split()[:max_words])
    # Then the neighbours of the chosen ones (the next first): a table row's other cells, a fact's second half.
    for index in list(chosen):
        for neighbour in (index + 1, index - 1):
            if 0 <= neighbour < len(sentences) and neighbour not in chosen:
                length = len(sentences[neighbour].split())
                if length <= room:
                    chosen.append(neighbour)
                    room -= length
    order = sorted(chosen)
    return (
        "".join(sentences[index] + (after[index] if index + 1 in chosen else "\n") for index in order[:-1])
        + sentences[order[-1]]
    )


def excerpts(passages: Sequence[str], query: str, max_words: int) -> list[str]:
    """`excerpt` of each passage (best first, as retrieved), empty ones left out."""
    return [text for text in (excerpt(passage, query, max_words) for passage in passages) if text]
