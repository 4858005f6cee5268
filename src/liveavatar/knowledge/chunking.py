"""Split document text into overlapping passages that respect paragraph and sentence boundaries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TARGET_WORDS = 180
MAX_WORDS = 250
OVERLAP_WORDS = 40
MAX_CHARS = 2400

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+\s*")
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    """One passage of a source document: its text, the source's name and where it sits in that source."""

    text: str
    source: str
    position: int
    """Ordinal of the passage within its source."""
    start: int
    """Character offset of the passage's first unit in the source text."""


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int
    chars: int
    brk: Literal["para", "line", "sentence"]


def _units(text: str, max_words: int, max_chars: int) -> list[_Unit]:
    """Sentences (and lines) with their offsets; any longer than a chunk is cut into word windows."""
    units: list[_Unit] = []
    para_start = 0
    for para_end, next_start in [*((m.start(), m.end()) for m in _PARAGRAPH.finditer(text)), (len(text), len(text))]:
        brk: Literal["para", "line", "sentence"] = "para"
        line_start = para_start
        for line in text[para_start:para_end].split("\n"):
            line_end = line_start + len(line)
            cut = line_start
            pieces: list[tuple[int, int]] = []
            for match in _SENTENCE_END.finditer(text, line_start, line_end):
                pieces.append((cut, match.end()))
                cut = match.end()
            pieces.append((cut, line_end))
            for start, end in pieces:
                for piece_start, piece_end, words in _windows(text, start, end, max_words, max_chars):
                    units.append(_Unit(piece_start, piece_end, words, piece_end - piece_start, brk))
                    brk = "sentence"
            brk = "line" if brk != "para" else brk
            line_start = line_end + 1
        para_start = next_start
    return units


def _windows(text: str, start: int, end: int, max_words: int, max_chars: int) -> list[tuple[int, int, int]]:
    """(start, end, words) of [start, end) stripped, cut into pieces of at most max_words words / max_chars chars."""
    tokens: list[tuple[int, int]] = []
    for match in _TOKEN.finditer(text, start, end):
        for offset in range(match.start(), match.end(), max_chars):
            tokens.append((offset, min(offset + max_chars, match.end())))
    windows: list[tuple[int, int, int]] = []
    first = 0
    for index in range(1, len(tokens) + 1):
        if (
            index == len(tokens)
            or index - first >= max_words
            or tokens[index][1] - tokens[first][0] > max_chars
            or tokens[index][0] == tokens[index - 1][1]  # pieces of one over-long token are never joined
        ):
            windows.append((tokens[first][0], tokens[index - 1][1], index - first))
            first = index
    return windows


def _render(text: str, units: list[_Unit]) -> str:
    parts: list[str] = []
    for index, unit in enumerate(units):
        body = " ".join(text[unit.start : unit.end].split())
        if index:
            parts.append({"para": "\n\n", "line": "\n", "sentence": " "}[unit.brk])
        parts.append(body)
    return "".join(parts)


def _size(units: list[_Unit]) -> int:
    return sum(unit.chars for unit in units) + 2 * len(units)


def chunk_text(
    text: str,
    source: str,
    *,
    target_words: int = TARGET_WORDS,
    max_words: int = MAX_WORDS,
    overlap_words: int = OVERLAP_WORDS,
    max_chars: int = MAX_CHARS,
) -> list[Chunk]:
    """Passages of about target..max_words words; a cut inside a paragraph repeats up to overlap_words words."""
    if not 0 < target_words <= max_words or overlap_words < 0 or max_chars < 16:
        raise ValueError("need 0 < target_words <= max_words, overlap_words >= 0 and max_chars >= 16")
    units = _units(text, max_words, max_chars - 8)
    chunks: list[Chunk] = []
    first = 0
    while first < len(units):
        end = first + 1
        words = units[first].words
        while end < len(units):
            unit = units[end]
            if words + unit.words > max_words or _size(units[first : end + 1]) > max_chars:
                break
            if words >= target_words and unit.brk == "para":
                break
            words += unit.words
            end += 1
        chunks.append(Chunk(_render(text, units[first:end]), source, len(chunks), units[first].start))
        if end >= len(units):
            break
        next_first = end
        if units[end].brk != "para":
            overlap = 0
            while next_first - 1 > first and overlap + units[next_first - 1].words <= overlap_words:
                next_first -= 1
                overlap += units[next_first].words
                if units[next_first].brk == "para":
                    break
        first = next_first
    return chunks
