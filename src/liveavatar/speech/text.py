"""Text before speech: pronunciation maps and sentence splitting (whole text or token by token)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from typing import Final

SENTENCE_ENDS: Final = frozenset(".!?…")
"""Sentence-final punctuation that needs whitespace (and no lowercase word) after it to end a sentence."""
CJK_SENTENCE_ENDS: Final = frozenset("。！？")
"""Full-width sentence-final punctuation: ends a sentence at once."""
CLAUSE_ENDS: Final = frozenset(",;:")
CJK_CLAUSE_ENDS: Final = frozenset("，；：、")
CLOSERS: Final = frozenset("\"')]}»”’」』）")
"""Closing quotes and brackets that stay with the sentence they close."""

LONG_SENTENCE: Final = 200
"""Past this many characters a sentence is cut at the next clause boundary, so audio starts sooner."""
VERY_LONG_SENTENCE: Final = 400
"""Past this many characters with no clause boundary either, a sentence is cut at the next space..."""
LONGEST_WORD: Final = 24
"""...or this many characters later with none: a run of characters with no space counts as words of at most
this length (a language model spelling out a number digit after digit must not hold up the speech). Not a run
with CJK characters in it: those languages write no spaces, and their clauses end at their own punctuation."""
DASHES: Final = frozenset("-–—")
"""A dash between spaces (or an en/em dash before a space) ends a clause."""
FIRST_WORDS: Final = 3
"""A reply's first piece, when no clause ends sooner, is cut after this many words (or a few more)..."""
REST_WORDS: Final = 3
"""...provided at least this many words follow before the first clause or sentence ends."""
CLINGY_WORDS: Final = frozenset(
    {
        "a", "an", "the", "my", "your", "his", "her", "its", "our", "their", "this", "that", "these", "those",
        "to", "of", "in", "on", "at", "by", "for", "with", "from", "into", "about", "and", "or", "but", "not",
        "is", "are", "was", "were", "be", "very", "so", "no", "some", "any", "each", "every", "as", "than",
    }
)  # fmt: skip
"""Words a first piece never ends on: they lean on the next word (articles, prepositions, ...)."""
PHRASE_STARTS: Final = frozenset(
    {
        "and", "but", "or", "so", "because", "that", "which", "who", "when", "where", "while", "if", "to", "in",
        "on", "at", "for", "with", "from", "into", "about", "after", "before", "around", "through", "over", "under",
        "until", "since", "than", "like", "without", "during", "between",
    }
)  # fmt: skip
"""Words a first piece is best cut before: they open a phrase of their own."""

ABBREVIATIONS: Final = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "rev", "hon", "gen", "col", "lt",
        "sgt", "capt", "cmdr", "gov", "vs", "cf", "viz", "approx", "dept", "fig", "figs", "vol", "inc",
        "ltd", "corp", "bros", "e.g", "i.e", "a.m", "p.m", "ph.d",
    }
)  # fmt: skip
"""Words whose period never ends a sentence (lowercased, without the last dot); titles mostly, since a
lowercase next word already keeps "etc. and" together. Common words ("no", "art") stay out."""


def apply_pron_map(text: str, pron_map: Mapping[str, str] | None) -> str:
    """Replace whole-word, case-insensitive occurrences of the map's keys by their spoken forms."""
    if not pron_map:
        return text
    pattern, spoken = _compile_pron_map(tuple(sorted(pron_map.items())))
    if pattern is None:
        return text
    return pattern.sub(lambda match: spoken.get(match.group(0).lower(), match.group(0)), text)


@functools.lru_cache(maxsize=64)
def _compile_pron_map(items: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str] | None, dict[str, str]]:
    spoken = {key.strip().lower(): value for key, value in items if key.strip()}
    if not spoken:
        return None, spoken
    # Longest key first so "New York City" wins over "New York"; lookarounds rather than \b because
    # keys may begin or end with punctuation ("C++", "e.g.").
    keys = sorted(spoken, key=lambda key: (-len(key), key))
    alternatives = "|".join(re.escape(key) for key in keys)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE), spoken


def split_sentences(text: str, *, first_clause: bool = False) -> list[str]:
    """Split a whole text into sentences (stripped; their concatenation is the text modulo whitespace).

    `first_clause`: the first piece is a reply's opening clause (see SentenceSplitter).
    """
    splitter = SentenceSplitter(first_clause=first_clause)
    return splitter.feed(text) + splitter.finish()


class SentenceSplitter:
    """Incremental sentence splitter: feed text as it streams in, take sentences as soon as they are sure.

    With `first_clause` (a reply's splitter) the first piece is as short as sounds natural, so its speech
    starts sooner: it ends at the first clause boundary (comma, semicolon, colon, dash), or after the first
    few words when no clause ends within them and the next few words. Later pieces are whole sentences.
    """

    def __init__(self, *, first_clause: bool = False) -> None:
        self._pending = ""
        self._first = first_clause

    def feed(self, fragment: str) -> list[str]:
        """Add text; return the sentences it completed (a sentence end is sure once the next word shows)."""
        self._pending += fragment
        sentences: list[str] = []
        while True:
            text = self._pending.lstrip()
            end = _first_piece_end(text) if self._first else _sentence_end(text)
            if end is None:
                self._pending = text
                return sentences
            sentence = text[:end].strip()
            self._pending = text[end:]
            if sentence:
                sentences.append(sentence)
                self._first = False

    def finish(self) -> list[str]:
        """End of text: the pieces still held (the first piece may still be cut, now that its last word is whole)."""
        pieces = self.feed(" ") if self._first else []
        last = self.flush()
        return [*pieces, last] if last is not None else pieces

    def flush(self) -> str | None:
        """End of text: return what is left as the last sentence, or None if nothing is."""
        # Every end feed() left undecided waits only for text after it, so the rest is one sentence.
        rest = self._pending.strip()
        self._pending = ""
        return rest or None


def _first_piece_end(text: str) -> int | None:
    """Index just past the first piece of a reply: its first clause, or its first few words; None if not sure yet.

    A cut after word k (FIRST_WORDS <= k < FIRST_WORDS + 3) is weighed once k + REST_WORDS whole words have
    come: any clause or sentence end among them wins (decided on those words alone, as on the whole text);
    else the cut goes before a word that starts a phrase ("at", "that", ...), or, once every k was weighed,
    after the first word that does not lean on the next. So, as for `_sentence_end`, the answer does not
    depend on where the text happens to stop.
    """
    words = [word for match in _WORD.finditer(text) for word in _words(text, match.start(), match.end())]
    fallback: int | None = None
    for count in range(FIRST_WORDS, FIRST_WORDS + 3):
        if len(words) < count + REST_WORDS:
            return _sentence_end(text, clauses_from=0)
        window_end = words[count + REST_WORDS - 1][1]
        end = _sentence_end(text[: window_end + 1], clauses_from=0)
        if end is not None:
            return end
        start, stop = words[count - 1]
        if text[start:stop].lower() in CLINGY_WORDS:
            continue
        following = text[slice(*words[count])].lower()
        if following in PHRASE_STARTS:
            return stop
        fallback = stop if fallback is None else fallback
    return fallback if fallback is not None else _sentence_end(text, clauses_from=0)


_WORD: Final = re.compile(r"\S+")


def _words(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The whole words of the run text[start:end]: the run, cut after every LONGEST_WORD characters in a row
    that are not CJK (each cut depends only on the characters before it, whatever comes next)."""
    words: list[tuple[int, int]] = []
    word = stretch = start
    for i in range(start, end):
        if _wide(text[i]):
            stretch = i + 1
        elif i + 1 - stretch == LONGEST_WORD and i + 1 < end:
            words.append((word, i + 1))
            word = stretch = i + 1
    words.append((word, end))
    return [(a, b) for a, b in words if b < len(text)]


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _sentence_end(text: str, *, clauses_from: int = LONG_SENTENCE) -> int | None:
    """Index just past the first sure sentence end in `text`, or None if none is sure yet.

    Decisions never depend on where the text happens to stop: when one needs the next characters
    and they have not come yet, the answer is None, so any split of the input gives the same sentences.
    """
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if char == "\n":
            return i + 1
        if char in CJK_SENTENCE_ENDS:
            end = _skip_closers(text, _skip(text, i, CJK_SENTENCE_ENDS | SENTENCE_ENDS))
            return end if end < n else None
        if char in SENTENCE_ENDS:
            run_end = _skip(text, i, SENTENCE_ENDS)
            end = _skip_closers(text, run_end)
            if end == n:
                return None
            if not text[end].isspace():
                i = end  # "3.5", "e.g.", "example.com": no space, no sentence end
                continue
            following = _skip_spaces(text, end)
            if following == n:
                return None
            if text[following].islower():
                i = following  # "etc. and", "wait... what": the sentence goes on
                continue
            if run_end - i == 1 and char == "." and _is_abbreviation(text, i):
                i = following
                continue
            return end
        if i >= clauses_from:
            if char in DASHES and clauses_from == 0 and (char != "-" or (i > 0 and text[i - 1].isspace())):
                end = i + 1
                if end == n:
                    return None
                if text[end].isspace() and text[:i].strip():
                    return end
            elif char in CJK_CLAUSE_ENDS or char in CLAUSE_ENDS:
                end = _skip_closers(text, i + 1)
                if end == n:
                    return None
                if char in CJK_CLAUSE_ENDS or text[end].isspace():
                    return end
            elif i >= VERY_LONG_SENTENCE and (
                char.isspace() or (i >= VERY_LONG_SENTENCE + LONGEST_WORD and not _wide(char))
            ):
                return i
        i += 1
    return None


def _skip(text: str, i: int, chars: frozenset[str]) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _skip_closers(text: str, i: int) -> int:
    return _skip(text, i, CLOSERS)


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the period at `dot` closes an abbreviation or an initial ("Dr.", "e.g.", "J.")."""
    start = dot
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:dot].lstrip(".")
    if not word:
        return False
    if len(word) == 1 and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    if word.lower() in ABBREVIATIONS:
        return True
    parts = word.split(".")
    return len(parts) > 1 and all(len(part) == 1 for part in parts)  # "U.S.A", "e.g"
