"""Models alone, in this process (no server): the speed figures the model tests used to print.

Piper and espeak-ng synthesis (first sentence, real-time factor), SmolLM2 (load, first token, tokens/s),
Silero VAD (load, ms per 32 ms frame), Whisper tiny.en and base (load, real-time factor) and the knowledge
index (BM25 over a ~200-page corpus, MiniLM per chunk and per query). Prints numbers, asserts nothing.

    .venv/bin/python bench/models.py [--only piper,espeak,llm,vad,whisper,knowledge] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import BENCH_DIR, Reply, machine_info, run_bench

sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # the shared test corpora
from corpus import plant_chunks, plant_facts, plant_question  # noqa: E402

PARTS = ("piper", "espeak", "llm", "vad", "whisper", "knowledge")
PARAGRAPH = (
    "Welcome to the demo. I am a streaming avatar, and I speak with a voice that runs on this machine. "
    "Every sentence is synthesised while the one before it plays. Ask me anything you like."
)
GERMAN = "Guten Tag. Ich bin ein Avatar, und ich spreche mit einer Stimme, die auf diesem Rechner läuft. " * 3


def _since(started: float) -> float:
    return time.perf_counter() - started


async def piper() -> Reply:
    """First sentence and real-time factor of the packaged Piper voice on a short paragraph."""
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.piper_int8 import default_int8_dir
    from liveavatar.speech.sentences import SentenceTTS
    from liveavatar.speech.voices import PIPER_JOE

    tts = SentenceTTS(PiperEngine(int8_dir=default_int8_dir()))  # as the server speaks by default
    started = time.perf_counter()
    tts.load()
    load = _since(started)
    async for _ in tts.synthesize("Warm up.", PIPER_JOE):
        pass
    started = time.perf_counter()
    first = 0.0
    audio = 0.0
    async for chunk in tts.synthesize(PARAGRAPH, PIPER_JOE):
        first = first or _since(started)
        audio += chunk.duration
    total = _since(started)
    return {"load_s": load, "first_sentence_ms": first * 1000, "audio_s": audio, "real_time_factor": total / audio}


async def espeak() -> Reply:
    """Real-time factor of espeak-ng (German) through libespeak-ng."""
    from liveavatar.speech.base import Voice
    from liveavatar.speech.espeak import EspeakEngine
    from liveavatar.speech.sentences import SentenceTTS

    voice = Voice("espeak-de", "de", "de", "de", "male", "espeak", "de", "gmw/de")
    tts = SentenceTTS(EspeakEngine())
    started = time.perf_counter()
    audio = sum([chunk.duration async for chunk in tts.synthesize(GERMAN, voice)])
    total = _since(started)
    return {"audio_s": audio, "synthesis_ms": total * 1000, "real_time_factor": total / audio}


async def llm() -> Reply:
    """SmolLM2 (llama.cpp): load, a short answer's first token and rate, a long story's rate."""
    from liveavatar.llm import ChatMessage, LocalLLM

    question = [
        ChatMessage("system", "You are a helpful assistant. Answer in one or two short sentences."),
        ChatMessage("user", "What is the capital of France?"),
    ]
    story = [ChatMessage("user", "Tell me a very long story about a dragon who learns to bake bread.")]
    local = LocalLLM()
    started = time.perf_counter()
    model = local.load()
    results: Reply = {"load_s": _since(started), "model": model.path.name, "n_ctx": model.context_tokens}
    async for _ in local.stream(question, max_tokens=4, temperature=0.0):
        pass  # warm the prompt path once: the numbers below are steady state
    for name, messages, max_tokens, temperature in (("answer", question, 96, 0.0), ("story", story, 128, 0.7)):
        started = time.perf_counter()
        first: float | None = None
        text = ""
        async for delta in local.stream(messages, max_tokens=max_tokens, temperature=temperature):
            first = first or time.perf_counter()
            text += delta
        end = time.perf_counter()
        tokens = local.count_tokens(text)
        rate = (tokens - 1) / (end - first) if first is not None and end > first else float("nan")
        first_ms = (first - started) * 1000 if first is not None else float("nan")
        results[name] = {"first_token_ms": first_ms, "tokens": tokens, "tokens_per_s": rate}
    return results


async def vad() -> Reply:
    """Silero VAD: load time and ms per 32 ms frame."""
    from liveavatar.speech.vad import FRAME_SAMPLES, SileroVAD

    model = SileroVAD()
    started = time.perf_counter()
    model.load()
    load = _since(started)
    stream = model.stream()
    frame = (np.random.default_rng(1).standard_normal(FRAME_SAMPLES) * 0.1).astype(np.float32)
    started = time.perf_counter()
    for _ in range(1000):
        stream.process(frame)
    return {"load_ms": load * 1000, "ms_per_frame": _since(started)}


async def whisper() -> Reply:
    """Whisper tiny.en on Piper speech and Whisper base on espeak-ng German: load and real-time factor."""
    from liveavatar.speech.espeak import espeak_library
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.sentences import SentenceTTS
    from liveavatar.speech.stt import WhisperSTT
    from liveavatar.speech.voices import PIPER_JOE

    def at_16k(audio: Any, rate: int) -> Any:
        from scipy.signal import resample_poly

        return (resample_poly(audio.astype(np.float64), 16000, rate) / 32768).astype(np.float32)

    piper_tts = SentenceTTS(PiperEngine())
    piper_tts.load()
    english = piper_tts.synthesize_sentence("Can you recommend a good book about history", PIPER_JOE)
    assert english is not None
    library = espeak_library()
    german, _ = library.synthesize("Guten Morgen. Ich möchte heute eine große Pizza mit Käse bestellen.", "de", 175)
    results: Reply = {}
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as cache:
        stt = WhisperSTT(cache_dir=Path(cache))
        for name, language, audio, rate in (
            ("tiny_en", "en", english.audio, english.sample_rate),
            ("base_de", "de", german, library.sample_rate),
        ):
            started = time.perf_counter()
            stt.model_for(language)
            load = _since(started)
            samples = at_16k(audio, rate)
            started = time.perf_counter()
            transcript = await stt.transcribe(samples, language)
            spent = _since(started)
            results[name] = {
                "load_s": load,
                "real_time_factor": spent / max(transcript.duration, 1e-6),
                "heard": transcript.text,
            }
    return results


async def knowledge() -> Reply:
    """BM25 index and query times over a synthetic ~200-page corpus; MiniLM per chunk and per query."""
    from liveavatar.knowledge.index import KnowledgeIndex, default_embedder

    chunks = plant_chunks()
    facts = plant_facts()
    started = time.perf_counter()
    index = KnowledgeIndex.build(chunks, embedder=None)
    indexed = _since(started)
    started = time.perf_counter()
    found = sum(fact in index.search(plant_question(n), k=4)[0].text for n, fact in facts.items())
    results: Reply = {
        "chunks": len(chunks),
        "bm25_index_ms": indexed * 1000,
        "bm25_query_ms": _since(started) * 1000 / len(facts),
        "facts_found_first": f"{found}/{len(facts)}",
    }
    model = default_embedder()
    if model is not None:
        sample = [chunk.text for chunk in chunks[:16]]
        started = time.perf_counter()
        model.embed(sample)
        per_chunk = _since(started) / len(sample)
        started = time.perf_counter()
        model.embed([plant_question(40)])
        results["minilm"] = {
            "ms_per_chunk": per_chunk * 1000,
            "whole_corpus_s": per_chunk * len(chunks),
            "ms_per_query": _since(started) * 1000,
        }
    return results


BENCHES: dict[str, Callable[[], Awaitable[Reply]]] = {
    "piper": piper,
    "espeak": espeak,
    "llm": llm,
    "vad": vad,
    "whisper": whisper,
    "knowledge": knowledge,
}


async def run(parts: list[str]) -> Reply:
    """Each chosen part in turn, with the machine's load before and after."""
    results: Reply = {"machine": machine_info()}
    for name in parts:
        print(f"{name} ...", flush=True)
        results[name] = await BENCHES[name]()
    results["load_average_end"] = os.getloadavg()
    return results


def _flat(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _flat(f"{prefix}.{key}" if prefix else key, item)]
    if isinstance(value, float):
        return [f"  {prefix}: {value:.3f}"]
    return [f"  {prefix}: {value}"]


def format_summary(results: Reply) -> str:
    """One line per figure, grouped by model."""
    machine = results["machine"]
    lines = [f"models alone ({machine['cores']} cores, load {machine['load_average'][0]:.2f} at start)"]
    for name in PARTS:
        if name in results:
            lines += [f"{name}:", *_flat("", results[name])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; print the summary and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts (default: all)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "models.json")
    options = parser.parse_args(argv)
    parts = [part for part in options.only.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    return run_bench(run(parts), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
