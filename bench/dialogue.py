"""Dialogue benchmark: question -> first sound in dialogue mode, and the local LLM's speed on its own.

    .venv/bin/python bench/dialogue.py [--questions N] [--listen S]

Phase 1 loads the server's LLM (`liveavatar.llm.LocalLLM`: llama.cpp with the packaged model named by
LIVEAVATAR_LLM_LOCAL_MODEL, SmolLM2 by default) in this process, no server running, and times first token and
tokens per second on the same questions and the same prompt the server builds. Phase 2 starts its own
`liveavatar serve` on loopback (temporary data dir) and asks a dialogue-mode session (mode_type 2) the
questions from a client process (bench/dialogue_client.py): question -> first bot text, first sentence,
audio_start and first sound at the client, and the server's own stages from its /metrics (retrieval, prompt
build, first token, first clause, TTS first chunk). Prints numbers, asserts nothing, writes
bench/results/dialogue.json. Everything it starts is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from common import (
    BENCH_DIR,
    ClientPool,
    CpuSnapshot,
    CpuUse,
    Reply,
    ServerProcess,
    cpu_seconds,
    machine_info,
    run_bench,
    spread,
)
from liveavatar.llm import LLMSettings, LocalLLM, build_messages
from liveavatar.llm.local import DEFAULT_LOCAL_MODEL, auto_threads
from liveavatar.llm.prompt import MESSAGE_OVERHEAD, REPLY_OVERHEAD

CLIENT_SCRIPT = BENCH_DIR / "dialogue_client.py"
LANGUAGE = "en"
"""The sessions' language (the server passes it to the prompt builder)."""
MIN_RATE_TOKENS = 10
"""Answers shorter than this are left out of per-answer tokens/s (too few intervals to time)."""
SERVER_THREADS = int(os.environ.get("LIVEAVATAR_LLM_THREADS") or 0) or auto_threads()
"""The local model's threads in the server (it inherits this process's environment)."""
SERVER_MODEL = os.environ.get("LIVEAVATAR_LLM_LOCAL_MODEL") or DEFAULT_LOCAL_MODEL
"""The packaged local model the server runs."""
OTHER_THREADS = 2 if SERVER_THREADS == 1 else 1
"""The thread count phase 1 compares with the server's."""
WARMUP_QUESTION = "Hello! Who are you?"
QUESTIONS = (
    "What is the capital of France?",
    "How do I make a good cup of tea?",
    "Why is the sky blue?",
    "Can you recommend a book for a long train ride?",
    "What should I cook for dinner tonight?",
    "How far away is the moon?",
    "What is a good way to learn a new language?",
    "Tell me something interesting about octopuses.",
)


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run."""

    questions: int
    listen: float
    llm_repeats: int
    llm_max_tokens: int
    llm_threads: tuple[int, ...]
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="questions timed per phase [8]")
    parser.add_argument(
        "--listen", type=float, default=1.0, help="seconds of each spoken answer heard before interrupting it [1]"
    )
    parser.add_argument("--llm-repeats", type=int, default=1, help="times phase 1 asks each question [1]")
    parser.add_argument(
        "--llm-max-tokens", type=int, default=64, help="answer cap in phase 1 (the server's is 200) [64]"
    )
    parser.add_argument(
        "--llm-threads",
        default=f"{SERVER_THREADS},{OTHER_THREADS}",
        help=f"llama.cpp thread counts compared in phase 1, the server's first [{SERVER_THREADS},{OTHER_THREADS}]",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "dialogue.json")
    args = parser.parse_args(argv)
    return Options(
        questions=max(1, args.questions),
        listen=max(0.0, args.listen),
        llm_repeats=max(1, args.llm_repeats),
        llm_max_tokens=max(MIN_RATE_TOKENS + 1, args.llm_max_tokens),
        llm_threads=tuple(dict.fromkeys(max(1, int(n)) for n in str(args.llm_threads).split(",") if n.strip()))
        or (SERVER_THREADS,),
        output=args.output,
    )


def questions(count: int) -> list[str]:
    """`count` questions (the built-in eight, repeated as needed)."""
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]


# --- phase 1: the LLM alone ----------------------------------------------------------------------


async def ask_llm(llm: LocalLLM, settings: LLMSettings, question: str, max_tokens: int) -> Reply:
    """One answer (at most `max_tokens`), streamed as the server streams it: first-token ms, tokens, decode rate."""
    messages = build_messages(
        instructions="",
        passages=[],
        language=LANGUAGE,
        history=[],
        user_text=question,
        context_tokens=llm.context_tokens,
        max_answer_tokens=settings.max_tokens,
        count_tokens=llm.count_tokens,
    )
    prompt_tokens = sum(llm.count_tokens(m.content) + MESSAGE_OVERHEAD for m in messages) + REPLY_OVERHEAD
    deltas: list[tuple[float, str]] = []
    started = time.perf_counter()
    async for delta in llm.stream(messages, max_tokens=max_tokens, temperature=settings.temperature):
        deltas.append((time.perf_counter(), delta))
    finished = time.perf_counter()
    text = "".join(delta for _, delta in deltas)
    tokens = llm.count_tokens(text)
    first = deltas[0][0] if deltas else finished
    last = deltas[-1][0] if deltas else finished
    decode_s = last - first
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(deltas, deltas[1:], strict=False)]
    return {
        "question": question,
        "prompt_tokens": prompt_tokens,
        "first_token_ms": (first - started) * 1000,
        "total_ms": (finished - started) * 1000,
        "tokens": tokens,
        "deltas": len(deltas),
        "decode_s": decode_s,
        "tokens_per_s": (tokens - 1) / decode_s if tokens >= MIN_RATE_TOKENS and decode_s > 0 else None,
        "token_gap_ms": gaps,
        "text": text,
    }


def fold_answers(threads: int, load_s: float, cold: Reply, answers: list[Reply]) -> Reply:
    """The figures of one thread count's answers."""
    tokens = sum(a["tokens"] - 1 for a in answers if a["tokens"] >= 2)
    decode = sum(a["decode_s"] for a in answers if a["tokens"] >= 2)
    return {
        "threads": threads,
        "load_s": load_s,
        "cold": {key: value for key, value in cold.items() if key != "token_gap_ms"},
        "first_token_ms": spread([a["first_token_ms"] for a in answers]),
        "prompt_tokens": spread([float(a["prompt_tokens"]) for a in answers]),
        "answer_tokens": spread([float(a["tokens"]) for a in answers]),
        "answer_ms": spread([a["total_ms"] for a in answers]),
        "tokens_per_s": spread([a["tokens_per_s"] for a in answers if a["tokens_per_s"] is not None]),
        "tokens_per_s_overall": tokens / decode if decode > 0 else float("nan"),
        "token_gap_ms": spread([gap for a in answers for gap in a["token_gap_ms"]]),
        "raw": [{key: value for key, value in a.items() if key != "token_gap_ms"} for a in answers],
    }


async def measure_llm(texts: list[str], options: Options, cores: int) -> tuple[LocalLLM, Reply]:
    """Phase 1: load the local model once per thread count, then ask each question with each in turn.

    Turns alternate between thread counts question by question, so each sees the same neighbours. The
    first answer after each load is reported on its own. Returns the model with the server's thread count
    (it counts the tokens of the answers seen in phase 2) and the figures.
    """
    settings = LLMSettings()  # the server's defaults: the prompt is built for its 200-token answers
    cap = options.llm_max_tokens
    models: dict[int, LocalLLM] = {}
    loads_s: dict[int, float] = {}
    colds: dict[int, Reply] = {}
    for threads in options.llm_threads:
        models[threads] = LocalLLM(local_model=SERVER_MODEL, threads=threads, context_tokens=settings.context_tokens)
        started = time.perf_counter()
        await asyncio.to_thread(models[threads].load)
        loads_s[threads] = time.perf_counter() - started
        colds[threads] = await ask_llm(models[threads], settings, WARMUP_QUESTION, cap)
    answers: dict[int, list[Reply]] = {threads: [] for threads in options.llm_threads}
    before = CpuSnapshot.take(os.getpid(), [])
    for _ in range(options.llm_repeats):
        for text in texts:
            for threads, llm in models.items():
                answers[threads].append(await ask_llm(llm, settings, text, cap))
    cpu = CpuUse.between(before, CpuSnapshot.take(os.getpid(), []))
    first = options.llm_threads[0]
    return models[first], {
        "model": models[first].load().path.name,
        "max_tokens": cap,
        "server_max_tokens": settings.max_tokens,
        "server_threads": SERVER_THREADS,
        "temperature": settings.temperature,
        "bench_cpu_pct": cpu.server,
        "others_cores": cpu.others(cores) / 100.0,
        "load_average": os.getloadavg(),
        "answers_at_cap": sum(1 for a in answers[first] if a["deltas"] >= cap),
        "by_threads": [fold_answers(n, loads_s[n], colds[n], answers[n]) for n in options.llm_threads],
    }


async def wait_quiet(pid: int, *, below_pct: float = 15.0, window: float = 1.0, timeout: float = 90.0) -> float:
    """Wait until process `pid` uses under `below_pct` of a core over `window` s; the seconds waited.

    The server answers /healthz at once and loads Whisper, the VAD and the default voice in the background:
    an idle server with no session is quiet once that is done.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if 100.0 * (cpu_seconds(pid) - before) / window < below_pct:
            break
    return time.monotonic() - started


# --- phase 2: dialogue mode through the server ---------------------------------------------------

STAGE_SAMPLE = re.compile(r'^liveavatar_turn_stage_seconds_(sum|count)\{stage="([a-z_]+)"\} ([0-9.eE+-]+)$', re.M)
STAGES = (
    ("retrieval", "question -> passages"),
    ("prompt_build", "prompt built"),
    ("llm_first_token", "prompt -> LLM's first token"),
    ("first_clause", "first token -> first clause complete"),
    ("reply_to_tts", "question -> clause handed to the TTS"),
    ("tts_first_chunk", "clause -> TTS first chunk"),
    ("playback_lead", "first chunk queued ahead of the clock"),
    ("reply_to_first_sound", "question -> audio_start on the server"),
)
"""The server's turn stages (its /metrics), in the order a dialogue answer passes them."""


async def stage_totals(server: ServerProcess) -> dict[str, tuple[float, float]]:
    """Seconds summed and samples counted per turn stage, from the server's /metrics."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        text = (await client.get(f"{server.url}/metrics")).text
    totals: dict[str, list[float]] = {}
    for kind, stage, value in STAGE_SAMPLE.findall(text):
        totals.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
    return {stage: (pair[0], pair[1]) for stage, pair in totals.items()}


def stage_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> Reply:
    """Mean ms per stage over the samples taken between two scrapes."""
    means: Reply = {}
    for stage, (total, count) in after.items():
        total_before, count_before = before.get(stage, (0.0, 0.0))
        if count > count_before:
            means[stage] = {
                "mean_ms": (total - total_before) / (count - count_before) * 1000,
                "n": count - count_before,
            }
    return means


def seen_rate(answer: Reply, llm: LocalLLM) -> float | None:
    """Tokens per second of the server's LLM as the bot text arrived at the client (first to last chunk)."""
    times = answer["chunk_ms"]
    tokens = llm.count_tokens(answer["text"])
    if tokens < MIN_RATE_TOKENS or len(times) < 2 or times[-1] <= times[0]:
        return None
    return float((tokens - 1) / ((times[-1] - times[0]) / 1000))


async def measure_dialogue(
    server: ServerProcess, pool: ClientPool, texts: list[str], listen: float, cores: int
) -> Reply:
    """Phase 2: question -> first bot text / first sentence / audio_start / first sound, one question at a time."""
    client = await pool.first()
    # The client asks the warm-up question first: its stages are in this scrape's difference too, but it is one
    # sample of nine, and the figures are means.
    stages_before = await stage_totals(server)
    before = CpuSnapshot.take(server.pid, pool.pids)
    reply = await client.request("ask", timeout=900.0, questions=texts, warmup=WARMUP_QUESTION, listen=listen)
    cpu = CpuUse.between(before, CpuSnapshot.take(server.pid, pool.pids))
    stages = stage_means(stages_before, await stage_totals(server))
    answers: list[Reply] = reply["answers"]

    def column(key: str) -> list[float]:
        return [float(a[key]) for a in answers if a[key] is not None]

    return {
        "first_sound_ms": spread(column("first_sound_ms")),
        "first_chat_ms": spread(column("first_chat_ms")),
        "first_sentence_ms": spread(column("first_sentence_ms")),
        "audio_start_ms": spread(column("audio_start_ms")),
        "sentence_to_sound_ms": spread(
            [a["first_sound_ms"] - a["first_sentence_ms"] for a in answers if a["first_sentence_ms"] is not None]
        ),
        "server_stages": stages,
        "cold": reply["cold"],
        "listen_s": listen,
        "server_cpu_pct": cpu.server,
        "client_cpu_pct": cpu.clients,
        "others_cores": cpu.others(cores) / 100.0,
        "load_average": os.getloadavg(),
        "raw": answers,
    }


# --- output --------------------------------------------------------------------------------------


def ms(value: float) -> str:
    """A duration in ms for the summary."""
    return "n/a" if value != value else f"{value:.0f} ms"


def loads(values: tuple[float, float, float] | list[float]) -> str:
    """A load average triple for the summary."""
    return " / ".join(f"{v:.2f}" for v in values)


def llm_lines(llm: Reply) -> list[str]:
    """Summary lines of phase 1, a block per thread count."""
    lines = [
        f"LLM alone          {llm['model']} in the bench process, no server; answers capped at {llm['max_tokens']} "
        f"tokens (server: {llm['server_max_tokens']}); the server runs it on {llm['server_threads']} thread(s); other "
        f"work used {llm['others_cores']:.2f} cores meanwhile",
    ]
    for one in llm["by_threads"]:
        first, rate, tokens, gap = one["first_token_ms"], one["tokens_per_s"], one["answer_tokens"], one["token_gap_ms"]
        lines += [
            f"  {one['threads']} thread{'s' if one['threads'] > 1 else ' '}        first token median "
            f"{ms(first['median'])}, "
            f"p95 {ms(first['p95'])} (n={first['n']}; prompt ~{one['prompt_tokens']['median']:.0f} tokens, its "
            f"common prefix with the previous prompt reused); first answer after load "
            f"{ms(one['cold']['first_token_ms'])} (model load {one['load_s']:.2f} s)",
            f"                   decode median {rate['median']:.1f} tokens/s per answer (slowest {rate['min']:.1f}, "
            f"n={rate['n']}); {one['tokens_per_s_overall']:.1f} tokens/s over all; token interval median "
            f"{gap['median']:.1f} ms, p95 {gap['p95']:.1f} ms; answers median {tokens['median']:.0f} tokens",
        ]
    return lines


def format_summary(results: Reply) -> str:
    """The final block: every figure on a few lines."""
    llm, talk, machine = results["llm"], results["dialogue"], results["machine"]
    sound, chat, sentence, start, after = (
        talk["first_sound_ms"],
        talk["first_chat_ms"],
        talk["first_sentence_ms"],
        talk["audio_start_ms"],
        talk["sentence_to_sound_ms"],
    )
    playback = spread(
        [a["first_sound_ms"] - a["audio_start_ms"] for a in talk["raw"] if a["audio_start_ms"] is not None]
    )
    seen = talk["server_tokens_per_s"]
    alone = next((one for one in llm["by_threads"] if one["threads"] == llm["server_threads"]), llm["by_threads"][0])
    lines = [
        "=" * 110,
        f"liveavatar dialogue bench (dialogue mode, local LLM via llama.cpp, temperature {llm['temperature']}; Piper "
        "voice joe; 512x512 VP8 + Opus to a Python aiortc client on loopback)",
        f"machine            {machine['cores']} cores ({machine['usable_cores']} usable); load average 1/5/15 min: "
        f"start {loads(results['load_average_start'])}, after phase 1 {loads(llm['load_average'])}, end "
        f"{loads(machine['load_average'])}",
        *llm_lines(llm),
        f"question -> sound  median {ms(sound['median'])}, p95 {ms(sound['p95'])} (n={sound['n']}; send_chat -> first "
        f"decoded audio frame with sound at the client, idle joined session); cold (first question after the "
        f"server started: loads the LLM) {ms(talk['cold']['first_sound_ms'])}",
        f"  split            -> 1st bot text median {ms(chat['median'])} (p95 {ms(chat['p95'])}); -> 1st sentence "
        f"complete {ms(sentence['median'])} (p95 {ms(sentence['p95'])}); -> audio_start {ms(start['median'])} "
        f"(p95 {ms(start['p95'])})",
        "  server stages    "
        + "; ".join(
            f"{label} {talk['server_stages'][stage]['mean_ms']:.0f} ms"
            for stage, label in STAGES
            if stage in talk.get("server_stages", {})
        )
        + " (means, from its /metrics)",
        f"                   audio_start -> 1st sound at the client median {ms(playback['median'])} "
        f"(p95 {ms(playback['p95'])}): ~60 ms schedule lead, Opus, transport, client jitter buffer",
        f"                   1st sentence complete -> 1st sound median {ms(after['median'])} (p95 {ms(after['p95'])}): "
        "Piper on that sentence while the LLM goes on, ~60 ms schedule lead, Opus, client jitter buffer",
        f"  server LLM       {seen['median']:.1f} tokens/s median as the bot text reached the client (n={seen['n']}; "
        f"{llm['server_threads']} thread(s) sharing the server process with Piper and the encoders; alone on "
        f"{alone['threads']}: {alone['tokens_per_s']['median']:.1f})",
        f"  CPU              server {talk['server_cpu_pct']:.0f}% of a core, client {talk['client_cpu_pct']:.0f}%, "
        f"other work {talk['others_cores']:.2f} cores; load average at the end of the phase "
        f"{loads(talk['load_average'])}",
        f"wall time          {results['wall_seconds']:.0f} s",
        "=" * 110,
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


async def run(options: Options) -> Reply:
    """The LLM alone in this process, then a server with a client process asking a dialogue session."""
    started = time.monotonic()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    texts = questions(options.questions)
    print(f"{cores} cores, load average {load_start[0]:.2f}", flush=True)
    print(
        f"phase 1, LLM alone: {SERVER_MODEL} in this process ({'/'.join(map(str, options.llm_threads))} threads), "
        f"{len(texts) * options.llm_repeats} answers of at most {options.llm_max_tokens} tokens ...",
        flush=True,
    )
    llm, llm_results = await measure_llm(texts, options, cores)
    for one in llm_results["by_threads"]:
        print(
            f"  {one['threads']} threads: first token median {one['first_token_ms']['median']:.0f} ms, decode median "
            f"{one['tokens_per_s']['median']:.1f} tokens/s (load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        log_dir = Path(tmp)
        server = ServerProcess(log_dir, max_sessions=8)
        pool = ClientPool(CLIENT_SCRIPT, server, log_dir, per_client=1)
        try:
            print("phase 2: starting the server ...", flush=True)
            await server.start()
            waited = await wait_quiet(server.pid)
            print(f"  up; its background model loading took {waited:.1f} s", flush=True)
            print(f"question -> first sound over {len(texts)} questions (dialogue mode) ...", flush=True)
            dialogue = await measure_dialogue(server, pool, texts, options.listen, cores)
        finally:
            await pool.aclose()
            await server.aclose()
    rates = [rate for rate in (seen_rate(answer, llm) for answer in dialogue["raw"]) if rate is not None]
    dialogue["server_tokens_per_s"] = spread(rates)
    sound = dialogue["first_sound_ms"]
    print(f"  median {sound['median']:.0f} ms, p95 {sound['p95']:.0f} ms (load {os.getloadavg()[0]:.2f})", flush=True)
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "llm": llm_results,
        "dialogue": dialogue,
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
