"""Transport benchmark: join latency, data-channel round trip, server CPU per session, sessions held at 25 fps.

    .venv/bin/python bench/transport.py [--sessions-max N] [--duration S]

Starts its own `liveavatar serve` on loopback (temporary data dir) and measures it from client processes
(bench/transport_client.py), so the clients' VP8 decoding never takes the server's GIL. Prints numbers,
asserts nothing, writes bench/results/transport.json. Everything it starts is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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
    spread,
)

CLIENT_SCRIPT = BENCH_DIR / "transport_client.py"
CPU_LEVELS = (0, 1, 2, 4)
HOLD_FPS = 24.0
TARGET_INTERVAL_MS = 40.0
SETTLE_SECONDS = 2.0


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to run and for how long."""

    sessions_max: int
    duration: float
    cpu_window: float
    joins: int
    round_trips: int
    sessions_per_client: int
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions-max", type=int, default=12, help="highest ramp level tried [12]")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per ramp level [8]")
    parser.add_argument("--cpu-window", type=float, default=10.0, help="seconds per CPU level 0/1/2/4 [10]")
    parser.add_argument("--joins", type=int, default=10, help="joins timed for offer -> first frame [10]")
    parser.add_argument("--round-trips", type=int, default=200, help="interrupt -> ack round trips [200]")
    parser.add_argument("--sessions-per-client", type=int, default=4, help="sessions per client process [4]")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "transport.json")
    args = parser.parse_args(argv)
    return Options(
        sessions_max=max(1, args.sessions_max),
        duration=args.duration,
        cpu_window=args.cpu_window,
        joins=max(1, args.joins),
        round_trips=max(1, args.round_trips),
        sessions_per_client=max(1, args.sessions_per_client),
        output=args.output,
    )


def ramp_levels(sessions_max: int) -> list[int]:
    """Session counts to measure: 0, 1, 2, 4 (CPU levels), then 6, 8, ... up to `sessions_max`."""
    levels = [n for n in CPU_LEVELS if n <= sessions_max]
    levels += list(range(6, sessions_max + 1, 2))
    if sessions_max > levels[-1]:
        levels.append(sessions_max)
    return levels


# --- levels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One ramp level: sessions streaming at once, what each received, what it cost."""

    sessions: int
    seconds: float
    fps: list[float]
    interval_p95_ms: float
    jitter_p95_ms: float
    missing_frames: int
    cpu: CpuUse
    others_cores: float
    load_average: tuple[float, float, float]

    @property
    def worst_fps(self) -> float:
        """The fps of the session that got the fewest frames."""
        return min(self.fps, default=float("nan"))

    @property
    def holds(self) -> bool:
        """Every session received at least 24 fps."""
        return bool(self.fps) and self.worst_fps >= HOLD_FPS

    def to_json(self) -> Reply:
        """A JSON-ready view."""
        return {
            **{k: v for k, v in asdict(self).items() if k != "cpu"},
            "server_cpu_pct": self.cpu.server,
            "client_cpu_pct": self.cpu.clients,
            "machine_busy_pct": self.cpu.machine,
            "mean_fps": statistics.fmean(self.fps) if self.fps else None,
            "worst_fps": self.worst_fps if self.fps else None,
            "holds": self.holds,
        }


def level_from(sessions: int, seconds: float, windows: list[Reply], cpu: CpuUse, cores: int) -> Level:
    """Fold the clients' frame windows and the CPU use of one level."""
    intervals = [interval for window in windows for interval in window["intervals_ms"]]
    return Level(
        sessions=sessions,
        seconds=seconds,
        fps=[window["frames"] / window["seconds"] for window in windows],
        interval_p95_ms=percentile(intervals, 95),
        jitter_p95_ms=percentile([abs(i - TARGET_INTERVAL_MS) for i in intervals], 95),
        missing_frames=sum(int(window["missing"]) for window in windows),
        cpu=cpu,
        others_cores=cpu.others(cores) / 100.0,
        load_average=os.getloadavg(),
    )


# --- phases --------------------------------------------------------------------------------------


async def measure_latency(pool: ClientPool, joins: int) -> Reply:
    """Phase 1: offer -> answer and offer -> first decoded frame, one join at a time."""
    reply = await (await pool.first()).request("latency", joins=joins)
    return {
        "offer_to_answer_ms": spread(reply["answer_ms"]),
        "offer_to_first_frame_ms": spread(reply["first_frame_ms"]),
    }


async def measure_round_trips(pool: ClientPool, count: int) -> Reply:
    """Phase 2: interrupt command -> ack over the data channel of one streaming session."""
    reply = await (await pool.first()).request("round_trips", count=count)
    return spread(reply["rtt_ms"])


async def measure_level(server: ServerProcess, pool: ClientPool, sessions: int, seconds: float, cores: int) -> Level:
    """Bring the pool to `sessions`, let it settle, then measure frames and CPU over `seconds`."""
    if sessions == 0:
        await server.wait_idle()
    await pool.grow_to(sessions)
    await asyncio.sleep(SETTLE_SECONDS)
    start = CpuSnapshot.take(server.pid, pool.pids)
    if sessions:
        windows = await pool.measure(seconds)
    else:
        windows = []
        await asyncio.sleep(seconds)
    cpu = CpuUse.between(start, CpuSnapshot.take(server.pid, pool.pids))
    return level_from(sessions, seconds, windows, cpu, cores)


async def ramp(server: ServerProcess, pool: ClientPool, options: Options, cores: int) -> list[Level]:
    """Phases 3 and 4: levels 0, 1, 2, 4 (CPU window) always, then 6, 8, ... until a level fails to hold."""
    levels: list[Level] = []
    for sessions in ramp_levels(options.sessions_max):
        seconds = options.cpu_window if sessions in CPU_LEVELS else options.duration
        level = await measure_level(server, pool, sessions, seconds, cores)
        levels.append(level)
        print(format_level(level), flush=True)
        if sessions > max(CPU_LEVELS) and not level.holds:
            break
    return levels


# --- results -------------------------------------------------------------------------------------


def cpu_per_session(levels: list[Level]) -> Reply:
    """Server and client CPU per session (% of one core), above the idle server, at each CPU level."""
    idle = next((level.cpu.server for level in levels if level.sessions == 0), 0.0)
    server = {lv.sessions: (lv.cpu.server - idle) / lv.sessions for lv in levels if lv.sessions in CPU_LEVELS[1:]}
    clients = {lv.sessions: lv.cpu.clients / lv.sessions for lv in levels if lv.sessions in CPU_LEVELS[1:]}
    return {
        "idle_server_pct": idle,
        "server_pct_by_level": server,
        "server_pct_per_session": statistics.fmean(server.values()) if server else None,
        "client_pct_by_level": clients,
        "client_pct_per_session": statistics.fmean(clients.values()) if clients else None,
    }


def sessions_held(levels: list[Level]) -> int:
    """The highest level such that it and every level below it held 25 fps."""
    held = 0
    for level in levels:
        if level.sessions == 0:
            continue
        if not level.holds:
            break
        held = level.sessions
    return held


LEVEL_HEADER = (
    f"{'sessions':>8} {'window':>6} {'mean fps':>8} {'worst fps':>9} {'int p95':>8} {'jit p95':>8} {'missing':>7} "
    f"{'server %':>8} {'clients %':>9} {'others':>6} {'load1':>5}  holds"
)


def format_level(level: Level) -> str:
    """One row of the ramp table."""
    if level.fps:
        mean, worst = statistics.fmean(level.fps), level.worst_fps
        frames = f"{mean:>8.2f} {worst:>9.2f} {level.interval_p95_ms:>6.1f}ms {level.jitter_p95_ms:>6.1f}ms"
    else:
        frames = f"{'-':>8} {'-':>9} {'-':>8} {'-':>8}"
    holds = "-" if level.sessions == 0 else ("yes" if level.holds else "NO")
    return (
        f"{level.sessions:>8} {level.seconds:>5.0f}s {frames} {level.missing_frames:>7} "
        f"{level.cpu.server:>7.1f}% {level.cpu.clients:>8.1f}% {level.others_cores:>6.2f} "
        f"{level.load_average[0]:>5.2f}  {holds}"
    )


def format_summary(results: Reply) -> str:
    """The final block: every figure on a few lines."""
    latency, rtt, cpu = results["latency"], results["round_trip_ms"], results["cpu_per_session"]
    first, answer = latency["offer_to_first_frame_ms"], latency["offer_to_answer_ms"]
    machine = results["machine"]
    by_level = ", ".join(f"{n}: {pct:.1f}%" for n, pct in cpu["server_pct_by_level"].items())
    client_levels = ", ".join(f"{n}: {pct:.1f}%" for n, pct in cpu["client_pct_by_level"].items())
    start_load = " / ".join(f"{v:.2f}" for v in results["load_average_start"])
    end_load = " / ".join(f"{v:.2f}" for v in machine["load_average"])
    lines = [
        "=" * 100,
        "liveavatar transport bench (512x512 VP8 @ 25 fps, Python aiortc client, loopback)",
        f"machine            {machine['cores']} cores ({machine['usable_cores']} usable), load average 1/5/15 min: "
        f"start {start_load}, end {end_load}",
        f"offer -> 1st frame median {first['median']:.1f} ms, p95 {first['p95']:.1f} ms (n={first['n']}); "
        f"offer -> answer + channel open median {answer['median']:.1f} ms, p95 {answer['p95']:.1f} ms",
        f"data-channel RTT   interrupt -> ack median {rtt['median']:.2f} ms, p95 {rtt['p95']:.2f} ms (n={rtt['n']})",
        f"server CPU         idle {cpu['idle_server_pct']:.1f}% of a core; per session above idle ({by_level}) "
        f"-> {_pct(cpu['server_pct_per_session'])} of a core per session",
        f"client CPU         per session ({client_levels}) -> {_pct(cpu['client_pct_per_session'])} of a core "
        "per session (decoding, in the client processes)",
        f"sessions at 25 fps {results['sessions_held']} held by one server process "
        f"(every session >= {HOLD_FPS:.0f} fps; tried up to {results['levels'][-1]['sessions']})",
        failing_line(results["levels"]),
        f"wall time          {results['wall_seconds']:.0f} s",
        "=" * 100,
    ]
    return "\n".join(lines)


def failing_line(levels: list[Reply]) -> str:
    """Where the CPU went at the first level that did not hold (server-bound, or the box was full)."""
    failed = next((level for level in levels if level["sessions"] and not level["holds"]), None)
    if failed is None:
        return "first failure      none: every level tried held (raise --sessions-max to find the limit)"
    return (
        f"first failure      {failed['sessions']} sessions: worst {failed['worst_fps']:.2f} fps; server "
        f"{failed['server_cpu_pct']:.0f}% of a core, clients {failed['client_cpu_pct']:.0f}%, others "
        f"{failed['others_cores']:.2f} cores, machine {failed['machine_busy_pct']:.0f}% busy"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


async def run(options: Options) -> Reply:
    """Start a server and client processes, run every phase, stop everything; the results."""
    started = time.monotonic()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        server = ServerProcess(Path(tmp), max_sessions=max(64, options.sessions_max * 2))
        pool = ClientPool(CLIENT_SCRIPT, server, Path(tmp), options.sessions_per_client)
        try:
            print(f"starting the server ({cores} cores, load average {load_start[0]:.2f}) ...", flush=True)
            await server.start()
            print(f"offer -> first frame over {options.joins} joins ...", flush=True)
            latency = await measure_latency(pool, options.joins)
            print(f"data-channel round trip x {options.round_trips} ...", flush=True)
            rtt = await measure_round_trips(pool, options.round_trips)
            print("ramp (server % and clients % of one core; others: cores used by other work on the box)")
            print(LEVEL_HEADER, flush=True)
            levels = await ramp(server, pool, options, cores)
        finally:
            await pool.aclose()
            await server.aclose()
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "latency": latency,
        "round_trip_ms": rtt,
        "cpu_per_session": cpu_per_session(levels),
        "levels": [level.to_json() for level in levels],
        "sessions_held": sessions_held(levels),
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
