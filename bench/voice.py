"""Voice benchmark: end of the user's speech -> the avatar's first sound, and barge-in latency.

    .venv/bin/python bench/voice.py [--utterances N] [--barge-ins N] [--modes retelling,dialogue]

Starts its own `liveavatar serve` on loopback (temporary data dir) and talks to it from a client process
(bench/voice_client.py) whose microphone carries speech made with the packaged Piper voice, sent in real
time. Voice to voice: from the end of the speech in the microphone stream to the first decoded audio frame
with sound at the client, in retelling mode (the avatar repeats what it heard) and in dialogue mode (it
answers through the local LLM). Barge-in: while the avatar tells a long story the user speaks; the server's
own record (speech onset -> where the avatar's sound stopped, session clock) and the client's view (onset
sent -> the received audio goes silent). Prints numbers, asserts nothing, writes bench/results/voice.json.
Everything it starts is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
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
    ClientProcess,
    CpuSnapshot,
    CpuUse,
    Reply,
    ServerProcess,
    machine_info,
    run_bench,
    spread,
)
from dialogue import wait_quiet
from speaking_client import PARAGRAPHS

CLIENT_SCRIPT = BENCH_DIR / "voice_client.py"
DEFAULT_SILENCE_MS = 500
"""The server's server_vad silence_duration_ms: the silence that ends the user's turn."""
MIN_SPEECH_MS = 200
"""The server's turn detector reports an onset (and barges in) after this much voice."""
WARMUP = "Hello, can you hear me?"
UTTERANCES = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How do I make a cup of tea?",
)
INTERRUPTIONS = (
    "Stop, please tell me about the weather instead.",
    "Wait, can I ask you something?",
    "Hold on, that is not what I meant.",
    "Sorry to interrupt, what time is it?",
    "Excuse me, could you say that again?",
    "Let me stop you there for a moment.",
)
STORY = " ".join(PARAGRAPHS[:2])
"""What the avatar is telling when it is interrupted (~45 s of speech; it never gets near the end)."""
MODES = {1: "retelling", 2: "dialogue"}
STAGES = (
    "voice_end_to_turn_end",
    "turn_end_lag",
    "speech_end_to_transcript",
    "stt_pass",
    "reply_to_first_sound",
    "tts_first_chunk",
)
"""The server's turn stages (its /metrics histograms), in the order of a voice turn."""
_STAGE_LINE = re.compile(r'^liveavatar_turn_stage_seconds_(sum|count)\{stage="([a-z_]+)"\} (\S+)$', re.MULTILINE)


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run."""

    utterances: int
    barge_ins: int
    modes: tuple[str, ...]
    listen: float
    delay: float
    silence_ms: int | None
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=len(UTTERANCES), help="utterances timed per mode [6]")
    parser.add_argument("--barge-ins", type=int, default=len(INTERRUPTIONS), help="barge-ins timed (0: none) [6]")
    parser.add_argument(
        "--modes", default=",".join(MODES.values()), help="voice-to-voice modes timed [retelling,dialogue]"
    )
    parser.add_argument(
        "--listen", type=float, default=1.0, help="seconds of each reply heard before interrupting it [1]"
    )
    parser.add_argument(
        "--delay", type=float, default=1.0, help="seconds of the avatar's story before the user speaks [1]"
    )
    parser.add_argument(
        "--silence-ms",
        type=int,
        default=None,
        help=f"turn detection silence_duration_ms for the sessions [server default, {DEFAULT_SILENCE_MS}]",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "voice.json")
    args = parser.parse_args(argv)
    return Options(
        utterances=max(1, args.utterances),
        barge_ins=max(0, args.barge_ins),
        modes=tuple(name for name in MODES.values() if name in args.modes.split(",")),
        listen=max(0.0, args.listen),
        delay=max(0.0, args.delay),
        silence_ms=args.silence_ms,
        output=args.output,
    )


def pick(texts: tuple[str, ...], count: int) -> list[str]:
    """`count` texts (the built-in ones, repeated as needed)."""
    return [texts[i % len(texts)] for i in range(count)]


# --- phases --------------------------------------------------------------------------------------


@dataclass
class Phase:
    """CPU and load over one phase."""

    server: ServerProcess
    client: ClientProcess
    cores: int
    start: CpuSnapshot | None = None
    stages: dict[tuple[str, str], float] | None = None

    async def begin(self) -> None:
        """Start counting."""
        self.start = CpuSnapshot.take(self.server.pid, [self.client.pid])
        self.stages = await stage_totals(self.server)

    async def stage_means(self) -> dict[str, float | None]:
        """Mean of each server turn stage since `begin`, in ms (None: not observed)."""
        assert self.stages is not None
        now = await stage_totals(self.server)
        means: dict[str, float | None] = {}
        for stage in STAGES:
            count = now.get(("count", stage), 0.0) - self.stages.get(("count", stage), 0.0)
            total = now.get(("sum", stage), 0.0) - self.stages.get(("sum", stage), 0.0)
            means[stage] = 1000 * total / count if count else None
        return means

    def end(self) -> Reply:
        """CPU since `begin`: server and client in % of a core, others in cores; the load average now."""
        assert self.start is not None
        cpu = CpuUse.between(self.start, CpuSnapshot.take(self.server.pid, [self.client.pid]))
        return {
            "server_cpu_pct": cpu.server,
            "client_cpu_pct": cpu.clients,
            "others_cores": cpu.others(self.cores) / 100.0,
            "load_average": os.getloadavg(),
        }


async def stage_totals(server: ServerProcess) -> dict[tuple[str, str], float]:
    """The server's turn-stage histogram sums and counts from /metrics, by ("sum" | "count", stage)."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(f"{server.url}/metrics")
        response.raise_for_status()
    return {(kind, stage): float(value) for kind, stage, value in _STAGE_LINE.findall(response.text)}


def column(rows: list[Reply], key: str) -> list[float]:
    """The values of `key` that are there."""
    return [float(row[key]) for row in rows if row.get(key) is not None]


async def measure_voice(phase: Phase, mode: int, texts: list[str], options: Options) -> Reply:
    """Voice to voice in `mode`: speech end in the mic stream -> first sound, transcript, audio_start, bot text.

    A first session hears the warm-up utterance (its reply loads the mode's models: the cold figure); the
    utterances are timed in a second one, so the server's stage means count warm turns only.
    """
    params = {"mode": mode, "listen": options.listen, "silence_ms": options.silence_ms}
    warm = await phase.client.request("converse", timeout=900.0, utterances=[], warmup=WARMUP, **params)
    await phase.begin()
    reply = await phase.client.request("converse", timeout=900.0, utterances=texts, warmup=None, **params)
    turns: list[Reply] = reply["turns"]
    return {
        "mode": mode,
        "end_to_sound_ms": spread(column(turns, "end_to_sound_ms")),
        "end_to_transcript_ms": spread(column(turns, "end_to_transcript_ms")),
        "end_to_audio_start_ms": spread(column(turns, "end_to_audio_start_ms")),
        "end_to_bot_text_ms": spread(column(turns, "end_to_bot_text_ms")),
        "transcript_to_sound_ms": spread(
            [t["end_to_sound_ms"] - t["end_to_transcript_ms"] for t in turns if t["end_to_transcript_ms"] is not None]
        ),
        "mic_lag_ms": spread(column(turns, "mic_lag_ms")),
        "server_stage_mean_ms": await phase.stage_means(),
        "cold": warm["cold"],
        **phase.end(),
        "raw": turns,
    }


async def measure_barge_in(phase: Phase, texts: list[str], options: Options) -> Reply:
    """Barge-in: server onset -> silent_from, and client onset sent -> received audio silent."""
    await phase.begin()
    reply = await phase.client.request(
        "barge_in", timeout=900.0, story=STORY, utterances=texts, delay=options.delay, silence_ms=options.silence_ms
    )
    trials: list[Reply] = reply["trials"]
    return {
        "server_ms": spread(column(trials, "server_ms")),
        "client_ms": spread(column(trials, "client_ms")),
        "onset_to_audio_end_event_ms": spread(column(trials, "onset_to_audio_end_event_ms")),
        "barged": sum(1 for t in trials if t["barged"]),
        "already_silent": sum(1 for t in trials if t["already_silent"]),
        "trials": len(trials),
        **phase.end(),
        "raw": trials,
    }


# --- output --------------------------------------------------------------------------------------


def ms(value: float) -> str:
    """A duration in ms for the summary."""
    return "n/a" if value != value else f"{value:.0f} ms"


def loads(values: tuple[float, float, float] | list[float]) -> str:
    """A load average triple for the summary."""
    return " / ".join(f"{v:.2f}" for v in values)


def voice_lines(name: str, result: Reply) -> list[str]:
    """Summary lines of one voice-to-voice mode."""
    sound, heard, start, text, after = (
        result["end_to_sound_ms"],
        result["end_to_transcript_ms"],
        result["end_to_audio_start_ms"],
        result["end_to_bot_text_ms"],
        result["transcript_to_sound_ms"],
    )
    stages: dict[str, float | None] = result.get("server_stage_mean_ms", {})
    return [
        f"{name:<10} end -> 1st sound median {ms(sound['median'])}, p95 {ms(sound['p95'])} (n={sound['n']}); cold "
        f"(first utterance) {ms(result['cold']['end_to_sound_ms'])}",
        f"  split            -> user transcript at the client median {ms(heard['median'])} (p95 {ms(heard['p95'])}); "
        f"-> 1st bot text {ms(text['median'])}; -> audio_start {ms(start['median'])}; transcript -> 1st sound "
        f"{ms(after['median'])}",
        "  server (means)   "
        + "; ".join(f"{stage} {ms(value if value is not None else float('nan'))}" for stage, value in stages.items()),
        f"  CPU              server {result['server_cpu_pct']:.0f}% of a core, client {result['client_cpu_pct']:.0f}%, "
        f"other work {result['others_cores']:.2f} cores; load average {loads(result['load_average'])}",
    ]


def format_summary(results: Reply) -> str:
    """The final block: every figure on a few lines."""
    machine, barge = results["machine"], results["barge_in"]
    silence = results["options"]["silence_ms"] or DEFAULT_SILENCE_MS
    lines = [
        "=" * 110,
        "liveavatar voice bench (user speech: Piper voice joe through MicrophoneTrack, real time; server_vad "
        f"{silence} ms silence; Whisper tiny.en; avatar voice joe; Python aiortc client on loopback)",
        f"machine            {machine['cores']} cores ({machine['usable_cores']} usable); load average 1/5/15 min: "
        f"start {loads(results['load_average_start'])}, end {loads(machine['load_average'])}",
        "voice -> voice     from the last voiced sample of the user's speech going out in the microphone stream to "
        "the first decoded avatar audio frame with sound",
        *(line for name in MODES.values() if name in results for line in voice_lines(name, results[name])),
        *(barge_lines(barge) if barge is not None else []),
        f"wall time          {results['wall_seconds']:.0f} s",
        "=" * 110,
    ]
    return "\n".join(lines)


def barge_lines(barge: Reply) -> list[str]:
    """Summary lines of the barge-in phase."""
    server, client, event = barge["server_ms"], barge["client_ms"], barge["onset_to_audio_end_event_ms"]
    return [
        f"barge-in           server (transcript: silent_from - onset) median {ms(server['median'])}, p95 "
        f"{ms(server['p95'])} (n={server['n']}; the onset counts after {MIN_SPEECH_MS} ms of voice)",
        f"                   client (speech onset sent -> avatar audio received goes silent) median "
        f"{ms(client['median'])}, p95 {ms(client['p95'])} (n={client['n']}); onset -> audio_end event "
        f"{ms(event['median'])}",
        f"                   {barge['barged']} of {barge['trials']} utterances barged in; {barge['already_silent']} "
        f"fell in a pause of the avatar; server {barge['server_cpu_pct']:.0f}% of a core, other work "
        f"{barge['others_cores']:.2f} cores; load average {loads(barge['load_average'])}",
    ]


# --- main ----------------------------------------------------------------------------------------


async def run(options: Options) -> Reply:
    """A server and one client process: speech made, voice to voice in both modes, then barge-ins."""
    started = time.monotonic()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    utterances = pick(UTTERANCES, options.utterances)
    interruptions = pick(INTERRUPTIONS, options.barge_ins)
    print(f"{cores} cores, load average {load_start[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        log_dir = Path(tmp)
        server = ServerProcess(log_dir, max_sessions=8)
        pool = ClientPool(CLIENT_SCRIPT, server, log_dir, per_client=1)
        try:
            print("starting the server ...", flush=True)
            await server.start(timeout=180.0)
            waited = await wait_quiet(server.pid)
            print(f"  up; its background model loading (VAD, Whisper, Piper) took {waited:.1f} s", flush=True)
            client = await pool.first()
            print("making the user's speech with Piper ...", flush=True)
            speech = await client.request("prepare", texts=[WARMUP, *utterances, *interruptions])
            phase = Phase(server, client, cores)
            results: dict[str, Reply] = {}
            barge: Reply | None = None
            for mode, name in MODES.items():
                if name not in options.modes:
                    continue
                print(f"voice -> voice, {name} mode, {len(utterances)} utterances ...", flush=True)
                results[name] = await measure_voice(phase, mode, utterances, options)
                sound = results[name]["end_to_sound_ms"]
                print(
                    f"  median {sound['median']:.0f} ms, p95 {sound['p95']:.0f} ms (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
            if interruptions:
                print(f"barge-in, {len(interruptions)} interruptions ...", flush=True)
                barge = await measure_barge_in(phase, interruptions, options)
                print(
                    f"  server median {barge['server_ms']['median']:.0f} ms, client median "
                    f"{barge['client_ms']['median']:.0f} ms (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        finally:
            await pool.aclose()
            await server.aclose()
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "speech": speech,
        **results,
        "barge_in": barge,
        "story": STORY,
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
