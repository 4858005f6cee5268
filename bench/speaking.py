"""Speaking benchmark: chat -> first sound, render ms per frame, talking sessions one server process holds at 25 fps.

    .venv/bin/python bench/speaking.py [--sessions-max N] [--duration S]

Starts its own `liveavatar serve` on loopback (temporary data dir) and measures it from client processes
(bench/speaking_client.py) whose sessions are in retelling mode with the Piper voice: the avatar speaks the
text the client sends. Prints numbers, asserts nothing, writes bench/results/speaking.json. Everything it
starts is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
    machine_info,
    percentile,
    run_bench,
    spawn,
    spread,
    stop_process,
)

CLIENT_SCRIPT = BENCH_DIR / "speaking_client.py"
RENDER_SCRIPT = BENCH_DIR / "render.py"
HOLD_FPS = 24.0
AUDIO_OK_FPS = 48.0
"""Audio counts as continuous when every session gets this many of its 50 frames a second (and no speech gap)."""
TARGET_INTERVAL_MS = 40.0
TARGET_FIRST_SOUND_MS = 200.0
TARGET_FIRST_SOUND_P95_MS = 260.0
SCHEDULE_LEAD_MS = 20.0
"""session/playback.py: an idle session starts a reply's audio with the next 20 ms frame (at most this far)."""
CLIENT_JITTER_FRAMES = 4
"""aiortc's audio jitter buffer (the Python client) hands out a frame once 4 more have arrived."""
STAGE_LINE = re.compile(r'^liveavatar_turn_stage_seconds_(sum|count)\{stage="([a-z_]+)"\} (\S+)$')
WARMUP_SENTENCE = "Good morning."
SENTENCES = (
    "Hello, how are you today?",
    "The weather is lovely this morning.",
    "I would like a cup of tea, please.",
    "Thank you for coming to see us.",
    "Let me show you around the office.",
    "Our meeting starts at ten o'clock.",
    "This is a short test sentence.",
    "Can you hear me clearly now?",
    "We will be back in a moment.",
    "Have a wonderful day.",
)


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run and for how long."""

    sessions_max: int
    duration: float
    settle: float
    sentences: int
    render_frames: int
    sessions_per_client: int
    output: Path
    schedule_sessions: int = 8
    schedule_seconds: float = 30.0
    first_sound_only: bool = False
    """Only the TTS probe and chat -> first sound (no render, no talking ramp): the latency work's quick loop."""


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions-max", type=int, default=8, help="highest ramp level tried [8]")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per ramp level [8]")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between joining and measuring [3]")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help="chats timed for first sound [10]")
    parser.add_argument("--render-frames", type=int, default=750, help="frames per avatar for render.py [750]")
    parser.add_argument("--sessions-per-client", type=int, default=4, help="sessions per client process [4]")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "speaking.json")
    parser.add_argument("--schedule-sessions", type=int, default=8, help="Turns sharing one Piper, speech only [8]")
    parser.add_argument("--schedule-seconds", type=float, default=30.0, help="seconds they talk (0: skip) [30]")
    parser.add_argument(
        "--first-sound-only", action="store_true", help="only the TTS probe and chat -> first sound (no render, ramp)"
    )
    args = parser.parse_args(argv)
    return Options(
        sessions_max=max(1, args.sessions_max),
        duration=args.duration,
        settle=args.settle,
        sentences=max(1, args.sentences),
        render_frames=max(50, args.render_frames),
        sessions_per_client=max(1, args.sessions_per_client),
        output=args.output,
        schedule_sessions=max(1, args.schedule_sessions),
        schedule_seconds=max(0.0, args.schedule_seconds),
        first_sound_only=args.first_sound_only,
    )


def ramp_levels(sessions_max: int) -> list[int]:
    """Talking sessions to measure: 1, 2, 3, 4, then 6, 8, ... up to `sessions_max`."""
    levels = [n for n in (1, 2, 3, 4) if n <= sessions_max]
    levels += list(range(6, sessions_max + 1, 2))
    if sessions_max > levels[-1]:
        levels.append(sessions_max)
    return levels


def sentences(count: int) -> list[str]:
    """`count` short sentences (the built-in ten, repeated as needed)."""
    return [SENTENCES[i % len(SENTENCES)] for i in range(count)]


# --- phases without a server ---------------------------------------------------------------------


async def run_child(*args: str, log_dir: Path, name: str, timeout: float) -> str:
    """Run a child process to its end (stopped if the bench is cancelled); its stdout."""
    with (log_dir / f"{name}.log").open("ab") as log:
        process = await spawn(*args, log=log)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        finally:
            await stop_process(process, grace=5.0)
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}):\n{(log_dir / f'{name}.log').read_text()[-3000:]}")
    return out.decode()


async def measure_render(frames: int, log_dir: Path) -> dict[str, Reply]:
    """bench/render.py's figures per built-in avatar (single-threaded OpenCV/BLAS, speech-like mouth motion)."""
    out = await run_child(
        sys.executable, str(RENDER_SCRIPT), "--frames", str(frames), log_dir=log_dir, name="render", timeout=300
    )
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("avatar"))
    avatars: dict[str, Reply] = {}
    for line in lines[header + 1 :]:
        fields = line.split()
        if len(fields) != 7:
            continue
        build, pack, median, p95, p99, cpu = (float(value) for value in fields[1:])
        avatars[fields[0]] = {
            "build_s": build,
            "pack_mb": pack,
            "median_ms": median,
            "p95_ms": p95,
            "p99_ms": p99,
            "cpu_median_ms": cpu,
            "frames": frames,
        }
    return avatars


async def measure_tts(texts: list[str], log_dir: Path) -> Reply:
    """Piper alone, in a fresh process with no server running: synthesis ms and leading silence per sentence."""
    out = await run_child(
        sys.executable, str(CLIENT_SCRIPT), "--tts-probe", json.dumps(texts), log_dir=log_dir, name="tts", timeout=120
    )
    probe: Reply = json.loads(out.strip().splitlines()[-1])
    return {
        "load_s": probe["load_s"],
        "synth_ms": spread(probe["synth_ms"]),
        "audio_ms": spread(probe["audio_ms"]),
        "leading_silence_ms": spread(probe["leading_silence_ms"]),
        "first_piece_ms": spread(probe.get("first_piece_ms", [])),
    }


async def measure_schedule(sessions: int, seconds: float, log_dir: Path) -> Reply:
    """Speech only, no server: `sessions` Turns sharing one Piper in one process, audio read in real time."""
    if seconds <= 0:
        return {}
    out = await run_child(
        sys.executable,
        str(CLIENT_SCRIPT),
        "--schedule-probe",
        str(sessions),
        str(seconds),
        log_dir=log_dir,
        name="schedule",
        timeout=seconds * 10 + 120,
    )
    probe: Reply = json.loads(out.strip().splitlines()[-1])
    return {
        "sessions": probe["sessions"],
        "seconds": probe["seconds"],
        "late_pieces": probe["late_pieces"],
        "dry_ms": spread(probe["dry_ms"]),
        "turn_first_sound_ms": spread(probe["turn_first_sound_ms"]),
    }


def schedule_line(schedule: Reply) -> str:
    """Whether synthesis kept ahead of playback with that many sessions sharing the engine."""
    if not schedule:
        return "shared TTS         not measured (--schedule-seconds 0)"
    dry = schedule["dry_ms"]
    worst = f"; silent {dry['median']:.0f} ms median, {dry['max']:.0f} ms worst" if dry["n"] else ""
    return (
        f"shared TTS         {schedule['sessions']} sessions talking on one Piper (speech path only, "
        f"{schedule['seconds']:.0f} s): {schedule['late_pieces']} pieces came after the speech before them had "
        f"run out{worst}; reply -> first sample {schedule['turn_first_sound_ms']['median']:.0f} ms median"
    )


# --- phases with the server ----------------------------------------------------------------------


async def turn_stages(server: ServerProcess) -> dict[str, tuple[float, float]]:
    """The server's liveavatar_turn_stage_seconds histograms from /metrics: stage -> (sum of seconds, count)."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(f"{server.url}/metrics")
        response.raise_for_status()
    stages: dict[str, list[float]] = {}
    for line in response.text.splitlines():
        match = STAGE_LINE.match(line)
        if match:
            kind, stage, value = match.groups()
            stages.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
    return {stage: (total, count) for stage, (total, count) in stages.items()}


def stage_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean ms per turn stage observed between two /metrics readings."""
    means: dict[str, float] = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            means[stage] = 1000 * (total - total0) / (count - count0)
    return means


async def measure_first_sound(server: ServerProcess, pool: ClientPool, texts: list[str]) -> Reply:
    """Phase 1: chat -> first decoded frame with sound, on a joined idle session, one chat at a time."""
    client = await pool.first()
    cold = (await client.request("latency", timeout=600.0, sentences=[], warmup=WARMUP_SENTENCE))["cold"]
    before = await turn_stages(server)  # the stages of warm replies only
    reply = await client.request("latency", timeout=600.0, sentences=texts, warmup="")
    stages = stage_means(before, await turn_stages(server))
    return {
        "server_stages_ms": stages,
        "first_sound_ms": spread(reply["first_sound_ms"]),
        "audio_start_ms": spread([v for v in reply["audio_start_ms"] if v is not None]),
        "first_chat_ms": spread([v for v in reply["first_chat_ms"] if v is not None]),
        "start_to_sound_ms": spread(
            [s - a for s, a in zip(reply["first_sound_ms"], reply["audio_start_ms"], strict=True) if a is not None]
        ),
        "cold": cold,
        "sentences": texts,
        "raw": {key: reply[key] for key in ("first_sound_ms", "audio_start_ms", "first_chat_ms")},
    }


@dataclass(frozen=True)
class Level:
    """One ramp level: talking sessions at once, what each received, what it cost."""

    sessions: int
    seconds: float
    fps: list[float]
    interval_p95_ms: float
    missing_frames: int
    audio_fps: list[float]
    audio_gaps: int
    audio_gap_max_ms: float
    speech_gaps: int
    longest_silence_ms: float
    speaking_pct: float
    turn_start_ms: list[float]
    turns_ended: int
    cpu: CpuUse
    others_cores: float
    load_average: tuple[float, float, float]
    synthesis_gaps: int = 0
    """Breaks the server saw in replies (speech_gap: the next sentence synthesised after the last had played)."""

    @property
    def worst_fps(self) -> float:
        """The fps of the session that got the fewest frames."""
        return min(self.fps, default=float("nan"))

    @property
    def holds(self) -> bool:
        """Every session received at least 24 fps."""
        return bool(self.fps) and self.worst_fps >= HOLD_FPS

    @property
    def audio_ok(self) -> bool:
        """Every session received >= 48 audio frames a second and no reply had a speech gap."""
        return bool(self.audio_fps) and min(self.audio_fps) >= AUDIO_OK_FPS and self.speech_gaps == 0

    def to_json(self) -> Reply:
        """A JSON-ready view."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "cpu"},
            "server_cpu_pct": self.cpu.server,
            "server_cpu_pct_per_session": self.cpu.server / self.sessions,
            "client_cpu_pct": self.cpu.clients,
            "machine_busy_pct": self.cpu.machine,
            "mean_fps": statistics.fmean(self.fps) if self.fps else None,
            "worst_fps": self.worst_fps if self.fps else None,
            "turn_start_median_ms": statistics.median(self.turn_start_ms) if self.turn_start_ms else None,
            "worst_audio_fps": min(self.audio_fps, default=None),
            "holds": self.holds,
            "audio_ok": self.audio_ok,
        }


def level_from(sessions: int, seconds: float, windows: list[Reply], cpu: CpuUse, cores: int) -> Level:
    """Fold the clients' windows and the CPU use of one level."""
    intervals = [interval for window in windows for interval in window["intervals_ms"]]
    return Level(
        sessions=sessions,
        seconds=seconds,
        fps=[window["frames"] / window["seconds"] for window in windows],
        interval_p95_ms=percentile(intervals, 95),
        missing_frames=sum(int(window["missing"]) for window in windows),
        audio_fps=[window["audio_frames"] / window["seconds"] for window in windows],
        audio_gaps=sum(int(window["audio_gaps"]) for window in windows),
        audio_gap_max_ms=max(float(window["audio_gap_max_ms"]) for window in windows),
        speech_gaps=sum(int(window["speech_gaps"]) for window in windows),
        longest_silence_ms=max(float(window["longest_silence_ms"]) for window in windows),
        speaking_pct=statistics.fmean(float(window["speaking_pct"]) for window in windows),
        turn_start_ms=[ms for window in windows for ms in window["turn_start_ms"]],
        turns_ended=sum(int(window["turns_ended"]) for window in windows),
        cpu=cpu,
        others_cores=cpu.others(cores) / 100.0,
        load_average=os.getloadavg(),
    )


async def measure_level(server: ServerProcess, pool: ClientPool, sessions: int, options: Options, cores: int) -> Level:
    """Bring the pool to `sessions` talking sessions, let them settle, then measure over `duration`."""
    await pool.grow_to(sessions)
    await asyncio.sleep(options.settle)
    start = CpuSnapshot.take(server.pid, pool.pids)
    windows = await pool.measure(options.duration)
    cpu = CpuUse.between(start, CpuSnapshot.take(server.pid, pool.pids))
    return level_from(sessions, options.duration, windows, cpu, cores)


async def ramp(server: ServerProcess, pool: ClientPool, options: Options, cores: int) -> list[Level]:
    """Phase 3: 1, 2, 3, 4, 6, ... talking sessions until two levels in a row fail to hold 24 fps in every session.

    One failed level may be a neighbour's burst on a shared box; the level after it tells whether it was.
    """
    levels: list[Level] = []
    for sessions in ramp_levels(options.sessions_max):
        level = await measure_level(server, pool, sessions, options, cores)
        levels.append(level)
        print(format_level(level), flush=True)
        if len(levels) >= 2 and not levels[-1].holds and not levels[-2].holds:
            break
    return levels


def sessions_held(levels: list[Level], kept: Callable[[Level], bool] = lambda level: level.holds) -> int:
    """The highest level such that it and every level below it `kept` (by default: held 25 fps)."""
    held = 0
    for level in levels:
        if not kept(level):
            break
        held = level.sessions
    return held


# --- output --------------------------------------------------------------------------------------

LEVEL_HEADER = (
    f"{'talking':>7} {'mean fps':>8} {'worst':>6} {'int p95':>8} {'miss':>5} {'audio/s':>7} "
    f"{'gaps>60':>7} {'max gap':>8} {'spch gaps':>9} {'speaking':>8} {'turn 1st':>8} "
    f"{'server %':>8} {'per sess':>8} {'clients %':>9} {'others':>6} {'load1':>5}  holds"
)


def format_level(level: Level) -> str:
    """One row of the ramp table."""
    turn = statistics.median(level.turn_start_ms) if level.turn_start_ms else float("nan")
    return (
        f"{level.sessions:>7} {statistics.fmean(level.fps):>8.2f} {level.worst_fps:>6.2f} "
        f"{level.interval_p95_ms:>6.1f}ms {level.missing_frames:>5} {min(level.audio_fps):>7.1f} "
        f"{level.audio_gaps:>7} {level.audio_gap_max_ms:>6.0f}ms {level.speech_gaps:>9} {level.speaking_pct:>7.0f}% "
        f"{turn:>6.0f}ms {level.cpu.server:>7.1f}% {level.cpu.server / level.sessions:>7.1f}% "
        f"{level.cpu.clients:>8.1f}% {level.others_cores:>6.2f} {level.load_average[0]:>5.2f}  "
        f"{'yes' if level.holds else 'NO'}"
    )


def format_render(render: dict[str, Reply]) -> list[str]:
    """One line per avatar."""
    return [
        f"render {name:<12} median {r['median_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms per "
        f"512x512 frame on one core (CPU median {r['cpu_median_ms']:.2f} ms; {r['frames']} frames)"
        for name, r in render.items()
    ]


def first_sound_results(
    options: Options,
    started: float,
    load_start: tuple[float, float, float],
    first_sound: Reply,
    tts: Reply,
    schedule: Reply,
) -> Reply:
    """The results of a --first-sound-only run."""
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "first_sound": first_sound,
        "tts": tts,
        "schedule": schedule,
        "wall_seconds": time.monotonic() - started,
    }


def stages_line(first: Reply) -> str:
    """The server's mean ms per turn stage (from /metrics) over the timed chats."""
    stages = first.get("server_stages_ms", {})
    order = ("reply_to_tts", "tts_first_chunk", "playback_lead", "reply_to_first_sound")
    named = [stage for stage in order if stage in stages] + sorted(set(stages) - set(order))
    return "server stages (mean ms): " + ", ".join(f"{stage} {stages[stage]:.0f}" for stage in named)


def format_first_sound_only(results: Reply) -> str:
    """The summary of a --first-sound-only run."""
    first, tts = results["first_sound"], results["tts"]
    sound, start, after = first["first_sound_ms"], first["audio_start_ms"], first["start_to_sound_ms"]
    return "\n".join(
        [
            "=" * 110,
            f"chat -> 1st sound  median {sound['median']:.0f} ms, p95 {sound['p95']:.0f} ms (n={sound['n']}; targets "
            f"median <= {TARGET_FIRST_SOUND_MS:.0f}, p95 <= {TARGET_FIRST_SOUND_P95_MS:.0f} ms); cold "
            f"{first['cold']['first_sound_ms']:.0f} ms",
            f"  split            chat -> audio_start event median {start['median']:.0f} ms; audio_start -> 1st sound "
            f"median {after['median']:.0f} ms (Opus + packetisation + client jitter buffer ~"
            f"{CLIENT_JITTER_FRAMES * 20} ms)",
            f"  {stages_line(first)}",
            f"  Piper alone      {tts['synth_ms']['median']:.0f} ms median to synthesise one whole sentence, "
            f"{tts['first_piece_ms']['median']:.0f} ms its first piece (what a reply synthesises first)",
            schedule_line(results["schedule"]),
            f"wall time          {results['wall_seconds']:.0f} s",
            "=" * 110,
        ]
    )


def format_summary(results: Reply) -> str:
    """The final block: every figure on a few lines."""
    if "levels" not in results:
        return format_first_sound_only(results)
    first, tts, machine = results["first_sound"], results["tts"], results["machine"]
    sound, start, chat, after = (
        first["first_sound_ms"],
        first["audio_start_ms"],
        first["first_chat_ms"],
        first["start_to_sound_ms"],
    )
    start_load = " / ".join(f"{v:.2f}" for v in results["load_average_start"])
    end_load = " / ".join(f"{v:.2f}" for v in machine["load_average"])
    levels = results["levels"]
    per_session = ", ".join(f"{lv['sessions']}: {lv['server_cpu_pct_per_session']:.0f}%" for lv in levels)
    verdict = "meets" if sound["median"] <= TARGET_FIRST_SOUND_MS else "misses"
    lines = [
        "=" * 110,
        "liveavatar speaking bench (retelling mode, Piper voice joe, 512x512 VP8 @ 25 fps, Python aiortc client, "
        "loopback)",
        f"machine            {machine['cores']} cores ({machine['usable_cores']} usable), load average 1/5/15 min: "
        f"start {start_load}, end {end_load}",
        f"chat -> 1st sound  median {sound['median']:.0f} ms, p95 {sound['p95']:.0f} ms (n={sound['n']}; "
        f"target <= {TARGET_FIRST_SOUND_MS:.0f} ms: {verdict} it); cold (first chat after server start) "
        f"{first['cold']['first_sound_ms']:.0f} ms",
        f"  split            chat -> audio_start event median {start['median']:.0f} ms (server: receive + TTS of "
        f"the 1st piece + <= {SCHEDULE_LEAD_MS:.0f} ms to the next audio frame); chat -> 1st bot text "
        f"{chat['median']:.0f} ms",
        f"                   audio_start -> 1st sound median {after['median']:.0f} ms (Piper's leading silence "
        f"{tts['leading_silence_ms']['median']:.0f} ms + Opus + client jitter buffer "
        f"~{CLIENT_JITTER_FRAMES * 20} ms)",
        f"  {stages_line(first)}",
        f"  Piper alone      {tts['synth_ms']['median']:.0f} ms median (p95 {tts['synth_ms']['p95']:.0f} ms) to "
        f"synthesise one of these sentences ({tts['audio_ms']['median']:.0f} ms of audio) in its own process, "
        f"no server; model load {tts['load_s']:.1f} s; its first piece {tts['first_piece_ms']['median']:.0f} ms",
        *format_render(results["render"]),
        f"talking sessions   {results['sessions_held']} held at 25 fps by one server process (every session >= "
        f"{HOLD_FPS:.0f} fps; tried up to {levels[-1]['sessions']}); server CPU per talking session: {per_session} "
        "of a core",
        failing_line(levels),
        audio_line(results["audio_held"], levels),
        schedule_line(results.get("schedule", {})),
        f"wall time          {results['wall_seconds']:.0f} s",
        "=" * 110,
    ]
    return "\n".join(lines)


def failing_line(levels: list[Reply]) -> str:
    """Where the CPU went at the first level that did not hold."""
    failed = next((level for level in levels if not level["holds"]), None)
    if failed is None:
        return "first failure      none: every level tried held (raise --sessions-max to find the limit)"
    return (
        f"first failure      {failed['sessions']} sessions: worst {failed['worst_fps']:.2f} fps; server "
        f"{failed['server_cpu_pct']:.0f}% of a core, clients {failed['client_cpu_pct']:.0f}%, others "
        f"{failed['others_cores']:.2f} cores, machine {failed['machine_busy_pct']:.0f}% busy"
    )


def audio_line(held: int, levels: list[Reply]) -> str:
    """Up to where audio stayed continuous, and how it broke first."""
    text = (
        f"audio continuity   kept up to {held} talking sessions (every session >= {AUDIO_OK_FPS:.0f} of 50 frames/s, "
        "no silence > 500 ms inside a reply)"
    )
    broken = next((level for level in levels if not level["audio_ok"]), None)
    if broken is None:
        return text
    return (
        f"{text}; first broken at {broken['sessions']}: worst {broken['worst_audio_fps']:.1f} frames/s, "
        f"{broken['audio_gaps']} frames > 60 ms late, {broken['speech_gaps']} speech gaps"
    )


# --- main ----------------------------------------------------------------------------------------


async def run(options: Options) -> Reply:
    """Render and TTS alone, then a server with client processes: first sound, then the talking ramp."""
    started = time.monotonic()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    texts = sentences(options.sentences)
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        log_dir = Path(tmp)
        print(f"{cores} cores, load average {load_start[0]:.2f}", flush=True)
        print(f"render: bench/render.py --frames {options.render_frames} ...", flush=True)
        render: dict[str, Reply] = {}
        if not options.first_sound_only:
            render = await measure_render(options.render_frames, log_dir)
        for line in format_render(render):
            print(line, flush=True)
        print("Piper alone on the same sentences ...", flush=True)
        tts = await measure_tts(texts, log_dir)
        print(f"{options.schedule_sessions} sessions sharing one Piper, speech only ...", flush=True)
        schedule = await measure_schedule(options.schedule_sessions, options.schedule_seconds, log_dir)
        print(schedule_line(schedule), flush=True)
        server = ServerProcess(log_dir, max_sessions=max(64, options.sessions_max * 2))
        pool = ClientPool(CLIENT_SCRIPT, server, log_dir, options.sessions_per_client)
        try:
            print("starting the server ...", flush=True)
            await server.start()
            print(f"chat -> first sound over {len(texts)} sentences ...", flush=True)
            first_sound = await measure_first_sound(server, pool, texts)
            sound = first_sound["first_sound_ms"]
            print(f"  median {sound['median']:.0f} ms, p95 {sound['p95']:.0f} ms", flush=True)
            print(f"  {stages_line(first_sound)}", flush=True)
            await server.wait_idle()
            levels: list[Level] = []
            if options.first_sound_only:
                return first_sound_results(options, started, load_start, first_sound, tts, schedule)
            print(
                "talking ramp (worst: the worst session's video fps; audio/s: the worst session's audio frames a "
                "second, 50 due; gaps>60: audio frames arriving > 60 ms apart; spch gaps: silences > 500 ms inside "
                "a reply; turn 1st: median paragraph -> 1st sound under load; server/clients: % of one core; "
                "others: cores used by other work)"
            )
            print(LEVEL_HEADER, flush=True)
            levels = await ramp(server, pool, options, cores)
        finally:
            await pool.aclose()
            await server.aclose()
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "first_sound": first_sound,
        "tts": tts,
        "schedule": schedule,
        "render": render,
        "levels": [level.to_json() for level in levels],
        "sessions_held": sessions_held(levels),
        "audio_held": sessions_held(levels, lambda level: level.audio_ok),
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
