"""Grounded-QA evaluation of the local LLMs: does the spoken answer state the fact from the right passage?

    .venv/bin/python bench/answers.py [--models smollm2-135m|PATH.gguf,...] [--threads N]

One knowledge index over the knowledge-base test corpora (tests/corpus.py: eight short documents with one fact
each and the ~200-page plant corpus), then ~30 questions asked through the server's own dialogue path
(`Dialogue.answer`: retrieval, prompt building, the LLM stream, the sentence splitter) with each installed model
in turn, one question at a time with no history. An answer scores when it contains the fact's key words or number,
and (separately) when it is spoken-style: at most MAX_WORDS words, no markdown or list. Questions the corpus
cannot answer score when the answer says so. Prints accuracy, mean length, retrieval + prompt, first-token,
first-clause and total latency per model; asserts nothing; writes bench/results/answers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import BENCH_DIR, Reply, machine_info, run_bench, spread
from liveavatar.knowledge.index import KnowledgeIndex
from liveavatar.llm import LLMSettings, LocalLLM, build_llm
from liveavatar.llm.local import PACKAGED_MODELS, installed_models, packaged_model_path
from liveavatar.session.dialogue import EXCERPT_WORDS, LOCAL_PASSAGES, Brain, Dialogue, Knowledge
from liveavatar.session.turn import Sentence, TextDelta

sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # the shared test corpora
from corpus import QUESTIONS, facts_chunks, plant_chunks, plant_crates, plant_question  # noqa: E402

MAX_WORDS = 45
"""Longest answer that still counts as short and spoken (about 15 s of speech)."""
MARKDOWN = re.compile(r"(^|\n)\s*([-*•]|\d+[.)]|#+)\s|\*\*|__|`|\|")
UNKNOWN = re.compile(
    r"\b(not (sure|know|have|find|available|mentioned|in)|n['’]t (know|have|find|say|mention)|no information"
    r"|unknown|unable|cannot|can['’]t)\b",
    re.IGNORECASE,
)
EXTRA_QUESTIONS = {
    "What colour is the Glimmerstone lamp?": "teal",
    "In which year was Velotrax founded?": "1987",
}
UNANSWERABLE = (
    "What is the phone number of the Zorblax service team?",
    "How many employees does Quillfeather Labs have?",
)
PLANT_UNITS = range(0, 180, 10)


@dataclass(frozen=True)
class Question:
    """A question and the words an answer must contain (none: the corpus cannot answer it)."""

    text: str
    expected: tuple[str, ...]


def questions() -> list[Question]:
    """8 + 2 questions on the short documents, 18 on the plant corpus, 2 the corpus cannot answer."""
    asked = [Question(text, tuple(answer.split())) for text, answer in {**QUESTIONS, **EXTRA_QUESTIONS}.items()]
    asked += [Question(plant_question(unit), (str(plant_crates(unit)),)) for unit in PLANT_UNITS]
    asked += [Question(text, ()) for text in UNANSWERABLE]
    return asked


def correct(question: Question, answer: str) -> bool:
    """The answer states the fact (every expected word, case-insensitive), or says it does not know."""
    if not question.expected:
        return bool(UNKNOWN.search(answer))
    words = answer.lower().replace(",", "")
    return all(word.lower() in words for word in question.expected)


def spoken(answer: str) -> bool:
    """Short, plain sentences: no markdown, no list, at most MAX_WORDS words."""
    return 0 < len(answer.split()) <= MAX_WORDS and not MARKDOWN.search(answer)


class IndexRetriever:
    """The dialogue's retriever over one in-memory index (the server's loads it from disk once per process)."""

    def __init__(self, index: KnowledgeIndex) -> None:
        self.index = index

    async def search(self, kb_id: str, query: str, k: int) -> list[str]:
        """The best `k` passages' texts."""
        return [passage.text for passage in await self.index.asearch(query, k)]


async def ask(dialogue: Dialogue, question: Question) -> Reply:
    """One answer through the dialogue path, timed: retrieval + prompt, first token, first clause, whole answer."""
    dialogue.history.clear()
    stages: dict[str, float] = {}
    dialogue.timing = stages.__setitem__
    started = time.perf_counter()
    first_token = first_sentence = None
    text = ""
    async for item in dialogue.answer(question.text, language="en", image=None):
        now = time.perf_counter()
        if isinstance(item, TextDelta):
            text += item.text
            if first_token is None and item.text.strip():
                first_token = now
        elif isinstance(item, Sentence) and first_sentence is None:
            first_sentence = now
    finished = time.perf_counter()
    answer = text.strip()
    return {
        "question": question.text,
        "expected": " ".join(question.expected),
        "answer": answer,
        "correct": correct(question, answer),
        "spoken": spoken(answer),
        "words": len(answer.split()),
        "retrieval_ms": stages.get("retrieval", 0.0) * 1000,
        "prompt_ms": stages.get("prompt_build", 0.0) * 1000,
        "first_token_ms": ((first_token or finished) - started) * 1000,
        "first_clause_ms": ((first_sentence or finished) - started) * 1000,
        "total_ms": (finished - started) * 1000,
        "passage_found": any(all(w in p for w in question.expected) for p in dialogue.last_passages)
        if question.expected
        else None,
    }


async def evaluate(
    name: str,
    path: Path,
    index: KnowledgeIndex,
    threads: int,
    passages: tuple[int, int],
    asked: list[Question],
) -> Reply:
    """Load one model and ask it every question (`passages`: how many, and words of each)."""
    passages, excerpt_words = passages
    # generous limits: the bench measures, it does not give up on a busy machine
    settings = LLMSettings(model_path=path, threads=threads, temperature=0.0, first_token_timeout=300, timeout=600)
    local = LocalLLM(model_path=path, threads=threads)
    started = time.perf_counter()
    model = await asyncio.to_thread(local.load)
    load_s = time.perf_counter() - started
    brain = Brain(build_llm(settings), settings, IndexRetriever(index))
    dialogue = Dialogue(brain, Knowledge("bench"), passages=passages, excerpt_words=excerpt_words)
    await ask(dialogue, Question("Hello, who are you?", ()))  # warm: the system prompt is in the cache after this
    answers = []
    for question in asked:
        answers.append(await ask(dialogue, question))
        mark = "ok " if answers[-1]["correct"] else "-- "
        print(f"  {mark}{answers[-1]['first_token_ms']:5.0f} ms  {question.text} -> {answers[-1]['answer'][:90]!r}")
    size_mb = (await asyncio.to_thread(path.stat)).st_size / 2**20

    def column(key: str) -> dict[str, float]:
        return spread([float(a[key]) for a in answers])

    return {
        "model": name,
        "file": model.path.name,
        "size_mb": size_mb,
        "threads": threads,
        "load_s": load_s,
        "accuracy": sum(a["correct"] for a in answers) / len(answers),
        "spoken": sum(a["spoken"] for a in answers) / len(answers),
        "retrieved": sum(bool(a["passage_found"]) for a in answers if a["passage_found"] is not None)
        / max(1, sum(a["passage_found"] is not None for a in answers)),
        "words": column("words"),
        "mean_words": sum(a["words"] for a in answers) / len(answers),
        "retrieval_ms": column("retrieval_ms"),
        "prompt_ms": column("prompt_ms"),
        "first_token_ms": column("first_token_ms"),
        "first_clause_ms": column("first_clause_ms"),
        "total_ms": column("total_ms"),
        "raw": answers,
    }


def format_summary(results: Reply) -> str:
    """One block per model."""
    lines = [
        "=" * 110,
        f"grounded QA: {results['questions']} questions over the knowledge-base test corpora ({results['chunks']} "
        f"chunks, {results['retrieval']}, {results['passages']} passages, "
        f"{results['excerpt_words'] or 'whole'} words of each); "
        f"temperature 0, no history; load average at start {results['machine']['load_average'][0]:.2f}",
    ]
    for one in results["models"]:
        lines += [
            f"{one['model']:<22} {one['file']} ({one['size_mb']:.0f} MB, {one['threads']} thread(s), load "
            f"{one['load_s']:.1f} s)",
            f"  accuracy {one['accuracy'] * 100:.0f}%, spoken-style {one['spoken'] * 100:.0f}%, mean "
            f"{one['mean_words']:.1f} words (right passage retrieved {one['retrieved'] * 100:.0f}%)",
            f"  median: retrieval {one['retrieval_ms']['median']:.0f} ms, prompt {one['prompt_ms']['median']:.1f} ms, "
            f"first token {one['first_token_ms']['median']:.0f} ms (p95 {one['first_token_ms']['p95']:.0f}), "
            f"first clause {one['first_clause_ms']['median']:.0f} ms, whole answer {one['total_ms']['median']:.0f} ms",
        ]
    lines.append("=" * 110)
    return "\n".join(lines)


async def run(
    models: list[tuple[str, Path]], threads: int, passages: int, excerpt_words: int, embeddings: bool
) -> Reply:
    """Index the corpora once, then evaluate each model."""
    from liveavatar.knowledge.index import default_embedder

    chunks = facts_chunks() + plant_chunks()
    index = KnowledgeIndex.build(chunks, embedder=default_embedder() if embeddings else None)
    asked = questions()
    results: Reply = {
        "machine": machine_info(),
        "questions": len(asked),
        "chunks": len(chunks),
        "retrieval": "BM25 + MiniLM" if index.embedding_model else "BM25",
        "passages": passages,
        "excerpt_words": excerpt_words,
        "models": [],
    }
    for name, path in models:
        print(f"{name}: {path.name} ...", flush=True)
        results["models"].append(await evaluate(name, path, index, threads, (passages, excerpt_words), asked))
    return results


def main(argv: list[str] | None = None) -> int:
    """Evaluate the chosen (default: every installed packaged) models; print the summary and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        default="",
        help=f"comma-separated packaged model names ({', '.join(PACKAGED_MODELS)}) or GGUF paths [installed ones]",
    )
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads [1]")
    parser.add_argument(
        "--passages", type=int, default=LOCAL_PASSAGES, help=f"passages per question [{LOCAL_PASSAGES}, the server's]"
    )
    parser.add_argument(
        "--excerpt-words",
        type=int,
        default=EXCERPT_WORDS,
        help=f"words of each passage in the prompt, 0: whole passages [{EXCERPT_WORDS}, the server's]",
    )
    parser.add_argument(
        "--embeddings", action="store_true", help="hybrid retrieval with MiniLM (embeds ~1200 chunks first) [BM25]"
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "answers.json")
    options = parser.parse_args(argv)
    names = [name for name in options.models.split(",") if name] or installed_models()
    models = [
        (name, packaged_model_path(name)) if name in PACKAGED_MODELS else (Path(name).stem, Path(name))
        for name in names
    ]
    return run_bench(
        run(
            models,
            max(1, options.threads),
            max(1, options.passages),
            max(0, options.excerpt_words),
            options.embeddings,
        ),
        options.output,
        format_summary,
    )


if __name__ == "__main__":
    sys.exit(main())
