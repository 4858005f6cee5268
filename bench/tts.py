"""Piper synthesis alone, no server: CPU per second of speech and first-piece latency, per onnxruntime setting.

Every variant speaks the same replies (split as a reply is, first clause first) through `PiperEngine.speak`
and the 48 kHz resampling the synthesis thread does. CPU is `time.process_time()` over the whole process
(onnxruntime computes in its own native threads too), divided by the seconds of audio produced; min and
median of `--runs` passes. First piece: wall and process CPU ms of each reply's opening clause (median).
Every variant's session is seeded alike (`onnxruntime.set_seed`), so its samples are compared with the first
variant's (Piper's noise is random otherwise). Then the split of one pass: phonemisation, the model run, the
Python around it, resampling. Prints numbers, asserts nothing.

    .venv/bin/python bench/tts.py [--runs 3] [--only shipped,intra2-spin,...] [--output PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import BENCH_DIR, Reply, machine_info, write_json

REPLIES = (
    "Sure, I can help with that. The museum opens at nine in the morning and closes at six. "
    "Tickets are cheaper online, and children under twelve go in free. Would you like the address?",
    "Good question. Our return policy lasts thirty days from the day you receive your order. "
    "Keep the receipt, because we need it to refund you. Opened software cannot be returned.",
    "Well, it depends on the weather. If it rains, the tour moves indoors to the old library. "
    "Otherwise we walk along the river and finish at the harbour around noon. Bring good shoes.",
    "Hello there! I am a streaming avatar, and I speak with a voice that runs on this machine. "
    "Every sentence is synthesised while the one before it plays. Ask me anything you like.",
)
PLAYBACK_RATE = 48000
SEED = 1234


def _pieces() -> list[list[str]]:
    from liveavatar.speech.text import split_sentences

    return [split_sentences(reply, first_clause=True) for reply in REPLIES]


def _variants() -> dict[str, Callable[[bytes, str], Any]]:
    """name -> builder of an onnxruntime session from the (alignment-patched) model bytes."""
    import onnxruntime

    def session(
        threads: int = 0,
        spinning: bool = True,
        level: Any = None,
        arena: bool = False,
        alignments: bool = True,
        denormal_as_zero: bool = False,
    ) -> Callable[[bytes, str], Any]:
        def build(patched: bytes, raw: str) -> Any:
            options = onnxruntime.SessionOptions()
            options.enable_cpu_mem_arena = arena
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            if denormal_as_zero:
                options.add_session_config_entry("session.set_denormal_as_zero", "1")
            if level is not None:
                options.graph_optimization_level = level
            model = patched if alignments else raw
            return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])

        return build

    levels = onnxruntime.GraphOptimizationLevel
    return {
        "before": session(),  # load_piper_model before issue 12: default threads (one per core), spinning
        "intra2-nospin": session(threads=2, spinning=False),
        "intra1": session(threads=1),
        "intra1-basic": session(threads=1, level=levels.ORT_ENABLE_BASIC),
        "intra1-extended": session(threads=1, level=levels.ORT_ENABLE_EXTENDED),
        "intra1-denormal0": session(threads=1, denormal_as_zero=True),
        "intra1-arena": session(threads=1, arena=True),  # the arena stays off (memory); its CPU, for the record
        "intra1-noalign": session(threads=1, alignments=False),  # no phoneme timings: cost of the alignments
    }


PassResult = tuple[float, float, list[float], list[float], list[Any]]


def _speak_pass(engine: Any, pieces: list[list[str]], voice: Any) -> PassResult:
    """(cpu s, audio s, first-piece wall ms, first-piece cpu ms, 48 kHz chunks) for one pass over the replies."""
    from liveavatar.speech.resample import resample

    firsts_wall: list[float] = []
    firsts_cpu: list[float] = []
    audio_s = 0.0
    chunks: list[Any] = []
    cpu0 = time.process_time()
    for reply in pieces:
        for index, piece in enumerate(reply):
            wall, cpu = time.perf_counter(), time.process_time()
            chunk = engine.speak(piece, voice, 1.0)
            audio = resample(chunk.audio, chunk.sample_rate, PLAYBACK_RATE)
            if index == 0:
                firsts_wall.append((time.perf_counter() - wall) * 1000)
                firsts_cpu.append((time.process_time() - cpu) * 1000)
            audio_s += len(audio) / PLAYBACK_RATE
            chunks.append(audio)
    return time.process_time() - cpu0, audio_s, firsts_wall, firsts_cpu, chunks


def _model_bytes(model_path: Path) -> bytes:
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    patched = onnx.load(str(model_path))
    add_alignment_output(patched)
    return patched.SerializeToString()


def measure_variant(name: str, build: Callable[[bytes, str], Any] | None, runs: int) -> Reply:
    """One variant: CPU per audio second (min, median over `runs`), first piece (median), its samples."""
    import onnxruntime
    from piper import PiperVoice

    from liveavatar.speech.piper import PiperEngine, load_piper_model, packaged_joe_paths
    from liveavatar.speech.piper_int8 import default_int8_dir
    from liveavatar.speech.voices import PIPER_JOE

    model_path, config_path = packaged_joe_paths()
    onnxruntime.set_seed(SEED)
    if build is None:  # what the project ships: load_piper_model as it is
        # the server's default: the int8 copy from the user cache (built there the first time)
        int8_dir = default_int8_dir()
        voice: Any = load_piper_model.__wrapped__(model_path, config_path, int8_dir)  # type: ignore[attr-defined]
    else:
        voice = PiperVoice.load(model_path, config_path)
        voice.session = build(_model_bytes(model_path), str(model_path))
    engine = PiperEngine(voice)
    pieces = _pieces()
    _, _, _, _, samples = _speak_pass(engine, pieces, PIPER_JOE)  # first pass: warm-up and the seeded samples
    per_audio: list[float] = []
    first_wall: list[float] = []
    first_cpu: list[float] = []
    audio_total = 0.0
    for _ in range(runs):
        cpu, audio_s, walls, cpus, _ = _speak_pass(engine, pieces, PIPER_JOE)
        per_audio.append(cpu / audio_s)
        first_wall.extend(walls)
        first_cpu.extend(cpus)
        audio_total = audio_s
    return {
        "variant": name,
        "cpu_per_audio_s_min": min(per_audio),
        "cpu_per_audio_s_median": statistics.median(per_audio),
        "first_piece_wall_ms_median": statistics.median(first_wall),
        "first_piece_wall_ms_min": min(first_wall),  # the quietest moment: nearest an idle box
        "first_piece_cpu_ms_median": statistics.median(first_cpu),
        "audio_s_per_pass": audio_total,
        "pieces_per_pass": sum(len(reply) for reply in pieces),
        "_samples": samples,
    }


def split_pass() -> Reply:
    """CPU of one pass split into phonemisation, the model run, the Python around it and resampling (shipped)."""
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.piper_int8 import default_int8_dir
    from liveavatar.speech.resample import resample
    from liveavatar.speech.voices import PIPER_JOE

    engine = PiperEngine(int8_dir=default_int8_dir())
    model: Any = engine.model()
    pieces = [piece for reply in _pieces() for piece in reply]
    for piece in pieces:  # warm-up
        engine.speak(piece, PIPER_JOE, 1.0)
    original_run = model.session.run
    spent = {"phonemize": 0.0, "model_run": 0.0, "speak_total": 0.0, "resample": 0.0}

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original_run(*args, **kwargs)
        finally:
            spent["model_run"] += time.process_time() - started

    model.session.run = timed_run
    audio_s = 0.0
    try:
        for piece in pieces:
            started = time.process_time()
            model.phonemize(piece)
            spent["phonemize"] += time.process_time() - started
            started = time.process_time()
            chunk = engine.speak(piece, PIPER_JOE, 1.0)
            spent["speak_total"] += time.process_time() - started
            started = time.process_time()
            resample(chunk.audio, chunk.sample_rate, PLAYBACK_RATE)
            spent["resample"] += time.process_time() - started
            audio_s += chunk.duration
    finally:
        model.session.run = original_run
    python = spent["speak_total"] - spent["model_run"] - spent["phonemize"]
    return {
        "phonemize_per_audio_s": spent["phonemize"] / audio_s,
        "model_run_per_audio_s": spent["model_run"] / audio_s,
        "python_per_audio_s": python / audio_s,
        "resample_per_audio_s": spent["resample"] / audio_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variants (shipped is always measured)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "tts.json")
    args = parser.parse_args(argv)
    variants: dict[str, Callable[[bytes, str], Any] | None] = {"shipped": None, **_variants()}
    if args.only:
        wanted = {"shipped", *args.only.split(",")}
        variants = {name: build for name, build in variants.items() if name in wanted}
    print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; {args.runs} runs per variant", flush=True)
    results: list[Reply] = []
    reference: list[Any] | None = None
    for name, build in variants.items():
        result = measure_variant(name, build, args.runs)
        samples = result.pop("_samples")
        if reference is None:
            reference = samples
        # Same lengths, and samples within float noise (a few int16 steps after rounding and resampling).
        same = len(samples) == len(reference) and all(len(a) == len(b) for a, b in zip(samples, reference, strict=True))
        # (without alignments Piper's leading silence is not trimmed: lengths differ, samples are not compared)
        worst = (
            max(
                (int(np.abs(a.astype(np.int32) - b).max(initial=0)) for a, b in zip(samples, reference, strict=True)),
                default=0,
            )
            if same
            else None
        )
        result["same_lengths_as_first"] = same
        result["max_sample_diff"] = worst
        results.append(result)
        print(
            f"{name:16s} CPU/audio s min {result['cpu_per_audio_s_min']:.4f}"
            f" median {result['cpu_per_audio_s_median']:.4f}"
            f" | first piece wall {result['first_piece_wall_ms_median']:.1f} ms"
            f" (min {result['first_piece_wall_ms_min']:.1f}),"
            f" CPU {result['first_piece_cpu_ms_median']:.1f} ms | same lengths {same}, max diff {worst}",
            flush=True,
        )
    split = split_pass()
    print("shipped split, CPU s per audio s: " + ", ".join(f"{k} {v:.4f}" for k, v in split.items()))
    print(f"load after {os.getloadavg()[0]:.2f}")
    write_json(args.output, {"machine": machine_info(), "variants": results, "split": split})
    return 0


if __name__ == "__main__":
    sys.exit(main())
