"""Scale benchmark: sessions inside the server process (`--workers 0`) against worker processes, side by side.

    .venv/bin/python bench/scale.py [--workers 2] [--sessions-max 8] [--duration 8]

For each set-up it starts its own `liveavatar serve` on loopback and measures it from client processes
(bench/speaking_client.py, retelling mode with the Piper voice): chat -> first sound on an idle session, then
talking sessions ramped up while each keeps speaking (until two levels in a row miss 24 fps). A level is
clean when every session gets >= 24 fps and >= 48 audio frames a second, no audio frame arrives > 60 ms
late (more than 80 ms after the one before it) and no silence inside a reply is longer than 700 ms.
Offer -> first frame is timed for every session joined. Server CPU counts the API process and its workers.
Prints numbers, asserts nothing, writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    cpu_seconds,
    machine_info,
    run_bench,
    spread,
)
from speaking import (
    CLIENT_SCRIPT,
    Level,
    level_from,
    measure_first_sound,
    ramp_levels,
    sentences,
    sessions_held,
)

CLEAN_LATE_MS = 60.0
AUDIO_FRAME_MS = 20.0
CLEAN_SILENCE_MS = 700.0


@dataclass(frozen=True)
class Options:
    """What to compare and for how long."""

    workers: int
    sessions_max: int
    duration: float
    settle: float
    sentences: int
    sessions_per_client: int
    count_video: bool
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the second set-up [2]")
    parser.add_argument("--sessions-max", type=int, default=8, help="highest ramp level tried [8]")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per ramp level [8]")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between joining and measuring [3]")
    parser.add_argument("--sentences", type=int, default=6, help="chats timed for first sound [6]")
    parser.add_argument("--sessions-per-client", type=int, default=4, help="sessions per client process [4]")
    parser.add_argument(
        "--count-video",
        action="store_true",
        help="clients count video frames without decoding them (leaves the box's cores to the server)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "scale.json")
    args = parser.parse_args(argv)
    return Options(
        workers=max(1, args.workers),
        sessions_max=max(1, args.sessions_max),
        duration=args.duration,
        settle=args.settle,
        sentences=max(1, args.sentences),
        sessions_per_client=max(1, args.sessions_per_client),
        count_video=args.count_video,
        output=args.output,
    )


def worker_pids(server_pid: int) -> list[int]:
    """The server's worker processes (spawned children)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == server_pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def clean(level: Level) -> bool:
    """Every session at 25 fps with clean audio: no late frame, no long silence inside talk."""
    return (
        level.holds
        and min(level.audio_fps) >= 48.0
        and level.audio_gap_max_ms - AUDIO_FRAME_MS <= CLEAN_LATE_MS
        and level.longest_silence_ms <= CLEAN_SILENCE_MS
    )


async def measure_setup(workers: int, options: Options, log_dir: Path) -> Reply:
    """One set-up: first sound on an idle session, then the talking ramp."""
    server = ServerProcess(log_dir, max_sessions=max(64, options.sessions_max * 2), workers=workers)
    os.environ["BENCH_VIDEO"] = "count" if options.count_video else "decode"  # read by the client processes
    pool = ClientPool(CLIENT_SCRIPT, server, log_dir, options.sessions_per_client)
    cores = os.cpu_count() or 1
    levels: list[Level] = []
    first_frame_ms: list[float] = []
    try:
        await server.start(timeout=300.0)
        for _ in range(600):  # every worker up (the server answers once the first one is)
            if (await server.health()).get("hosts", 0) >= max(workers, 1):
                break
            await asyncio.sleep(0.5)
        pids = [server.pid, *worker_pids(server.pid)]
        memory_idle = {str(pid): resident_mb(pid) for pid in pids}
        first_sound = await measure_first_sound(pool, sentences(options.sentences))
        await server.wait_idle()
        for sessions in ramp_levels(options.sessions_max):
            first_frame_ms += await pool.grow_to(sessions)
            await asyncio.sleep(options.settle)
            pids = [server.pid, *worker_pids(server.pid)]
            start = CpuSnapshot.take(server.pid, pool.pids)
            server_start = sum(cpu_seconds(pid) for pid in pids)
            windows = await pool.measure(options.duration)
            end = CpuSnapshot.take(server.pid, pool.pids)
            server_cpu = 100.0 * (sum(cpu_seconds(pid) for pid in pids) - server_start) / (end.at - start.at)
            use = CpuUse.between(start, end)
            level = level_from(sessions, options.duration, windows, CpuUse(server_cpu, use.clients, use.machine), cores)
            levels.append(level)
            print(f"  workers={workers}: {format_level(level)}", flush=True)
            if len(levels) >= 2 and not levels[-1].holds and not levels[-2].holds:
                break
        memory_loaded = {str(pid): resident_mb(pid) for pid in [server.pid, *worker_pids(server.pid)]}
    finally:
        await pool.aclose()
        await server.aclose()
    return {
        "workers": workers,
        "clean_sessions": sessions_held(levels, clean),
        "sessions_at_25_fps": sessions_held(levels),
        "first_sound_ms": first_sound["first_sound_ms"],
        "first_frame_ms": spread(first_frame_ms),
        "levels": [{**level.to_json(), "clean": clean(level)} for level in levels],
        "resident_mb_idle": memory_idle,
        "resident_mb_loaded": memory_loaded,
    }


def format_level(level: Level) -> str:
    """One ramp row."""
    return (
        f"{level.sessions:>2} talking: worst {level.worst_fps:5.2f} fps, audio/s {min(level.audio_fps):5.1f}, "
        f"gaps>60 {level.audio_gaps}, max gap {level.audio_gap_max_ms:4.0f} ms, "
        f"longest silence {level.longest_silence_ms:4.0f} ms, server {level.cpu.server:5.1f}% "
        f"({level.cpu.server / level.sessions:4.1f}% a session), load {level.load_average[0]:4.1f} "
        f"-> {'clean' if clean(level) else 'NOT clean'}"
    )


def format_summary(results: Reply) -> str:
    """Both set-ups side by side."""
    a, b = results["setups"]
    rows = [
        ("", f"--workers {a['workers']}", f"--workers {b['workers']}"),
        ("talking sessions, clean audio", str(a["clean_sessions"]), str(b["clean_sessions"])),
        ("talking sessions at 25 fps", str(a["sessions_at_25_fps"]), str(b["sessions_at_25_fps"])),
        (
            "offer -> first frame, median",
            f"{a['first_frame_ms']['median']:.0f} ms",
            f"{b['first_frame_ms']['median']:.0f} ms",
        ),
        ("offer -> first frame, p95", f"{a['first_frame_ms']['p95']:.0f} ms", f"{b['first_frame_ms']['p95']:.0f} ms"),
        (
            "chat -> first sound, median",
            f"{a['first_sound_ms']['median']:.0f} ms",
            f"{b['first_sound_ms']['median']:.0f} ms",
        ),
        ("chat -> first sound, p95", f"{a['first_sound_ms']['p95']:.0f} ms", f"{b['first_sound_ms']['p95']:.0f} ms"),
    ]
    for title, key in (("resident MB idle", "resident_mb_idle"), ("resident MB loaded", "resident_mb_loaded")):
        rows.append(
            (title, " + ".join(f"{v:.0f}" for v in a[key].values()), " + ".join(f"{v:.0f}" for v in b[key].values()))
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:>22}  {r[2]:>22}" for r in rows]
    machine = results["machine"]
    lines.append(
        f"({machine['usable_cores']} usable cores, load average at start {results['load_average_start'][0]:.2f}; "
        f"resident MB: API process first, then each worker)"
    )
    return "\n".join(lines)


async def run(options: Options) -> Reply:
    """Both set-ups, one after the other, on fresh servers."""
    started = time.monotonic()
    load_start = os.getloadavg()
    setups = []
    with tempfile.TemporaryDirectory(prefix="liveavatar-scale-") as tmp:
        for workers in (0, options.workers):
            print(f"--workers {workers}: starting the server, first sound, then the talking ramp ...", flush=True)
            log_dir = Path(tmp) / f"workers-{workers}"
            log_dir.mkdir()  # noqa: ASYNC240 (a temporary folder, once)
            setups.append(await measure_setup(workers, options, log_dir))
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "setups": setups,
        "first_frame_median_difference_ms": setups[1]["first_frame_ms"]["median"]
        - setups[0]["first_frame_ms"]["median"],
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the table and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
