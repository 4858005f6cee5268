"""Client-rendered sessions against server-rendered ones: talking sessions held with clean audio, server CPU each.

    .venv/bin/python bench/client_render.py [--sessions-max 40] [--server-sessions-max 8] [--duration 8]

For each render mode it starts its own `liveavatar serve` on loopback and ramps talking sessions (retelling
mode, the Piper voice or `--voice`, a new paragraph as soon as the last one ends) from client processes
(bench/client_render_client.py): `render: "client"` (audio + animation stream, no video), then
server-rendered video. A level is clean when every session gets >= 48 audio
frames a second, no audio frame arrives > 60 ms late (more than 80 ms after the one before it), no silence
inside a reply is longer than 700 ms, and >= 24 frames a second (animation frames, or video frames).
A level "keeps up" when every session gets >= 48 audio frames and >= 24 frames a second (lateness aside:
on a box shared with other work, late frames come from the neighbours too); the ramp stops after two levels
in a row that do not keep up. Server CPU is the server process's (and its
workers'); the clients run on the same box, so their CPU competes with the server's (reported too).
First, without a server, it measures what one session costs the server's CPU per second of talking (CPU time,
so a loaded box changes it little): the client-rendered path (Opus + the animation stream) against the
server-rendered one (Opus + render + VP8), on the same speech; TTS, the same for both, is left out.
Prints numbers, asserts nothing, writes bench/results/client_render.json.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
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
)
from liveavatar.media import AUDIO_PTIME, AUDIO_RATE
from speaking import Level, level_from, sessions_held, turn_stages

CLIENT_RENDER_SCRIPT = BENCH_DIR / "client_render_client.py"
CLEAN_LATE_MS = 60.0
AUDIO_FRAME_MS = 20.0
CLEAN_SILENCE_MS = 700.0


@dataclass(frozen=True)
class Options:
    """How far to ramp each mode and for how long."""

    sessions_max: int
    server_sessions_max: int
    duration: float
    settle: float
    sessions_per_client: int
    workers: int
    voice: str
    cost_seconds: float
    count_video: bool
    output: Path


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions-max", type=int, default=40, help="highest client-rendered level tried (0: skip) [40]"
    )
    parser.add_argument(
        "--server-sessions-max", type=int, default=8, help="highest server-rendered level tried (0: skip) [8]"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per level [8]")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between joining and measuring [3]")
    parser.add_argument("--sessions-per-client", type=int, default=8, help="sessions per client process [8]")
    parser.add_argument("--workers", type=int, default=0, help="server worker processes [0: in the API process]")
    parser.add_argument("--voice", default="piper-en-us-joe", help="voice of the talking sessions [piper-en-us-joe]")
    parser.add_argument("--cost-seconds", type=float, default=20.0, help="session seconds timed per path [20]")
    parser.add_argument(
        "--count-video",
        action="store_true",
        help="clients count video frames without decoding them (leaves the box's cores to the server)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "client_render.json")
    args = parser.parse_args(argv)
    return Options(
        sessions_max=max(0, args.sessions_max),
        server_sessions_max=max(0, args.server_sessions_max),
        duration=args.duration,
        settle=args.settle,
        sessions_per_client=max(1, args.sessions_per_client),
        workers=max(0, args.workers),
        voice=args.voice,
        cost_seconds=max(1.0, args.cost_seconds),
        count_video=args.count_video,
        output=args.output,
    )


def session_cost(seconds: float, cache_dir: Path) -> Reply:
    """CPU ms per second of a talking session, client-rendered vs server-rendered, in this process (no network)."""
    import av
    import cv2
    import numpy as np

    from liveavatar.render.avatars import AvatarRegistry
    from liveavatar.render.loop import renderer_for
    from liveavatar.render.motion import Motion
    from liveavatar.session.avatar import AvatarSource
    from liveavatar.session.puppet import Puppet
    from liveavatar.speech.base import SpeechChunk
    from liveavatar.transport.opus import SpeechOpusEncoder
    from liveavatar.transport.tracks import audio_frame
    from liveavatar.transport.vp8 import TalkingHeadVp8Encoder

    cv2.setNumThreads(1)
    pack = AvatarRegistry(cache_dir).pack("astronaut")
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    buzz = (9000 * np.sin(2 * np.pi * 160 * t) * np.abs(np.sin(2 * np.pi * 2.5 * t))).astype(np.int16)
    chunk = SpeechChunk("speech", buzz, AUDIO_RATE)
    sent: list[int] = []

    def stream(data: bytes) -> bool:
        sent.append(len(data))
        return True

    results: Reply = {}
    for render in ("client", "server"):
        opus = SpeechOpusEncoder()  # as the audio track encodes
        if render == "client":
            puppet = Puppet("astronaut", pack.size, Motion(seed=1))
            puppet.attach(stream, lambda: 0)
            speaker, pull = puppet.speaker, puppet.audio_frame
        else:
            source = AvatarSource(renderer_for(pack), Motion(seed=1))
            vp8 = TalkingHeadVp8Encoder()
            speaker, pull = source.speaker, source.audio_frame
        speaker.speak(chunk, buzz)
        ticks = int(seconds / AUDIO_PTIME)
        started = time.process_time()
        for index in range(ticks):
            now = index * AUDIO_PTIME
            opus.encode(audio_frame(pull(now), index))
            if render == "server" and index % 2 == 0:
                yuv = cv2.cvtColor(source.video_frame(now), cv2.COLOR_BGR2YUV_I420)
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts, frame.time_base = index // 2 * 3600, fractions.Fraction(1, 90_000)
                vp8.encode(frame)
        cpu = time.process_time() - started
        results[render] = {"cpu_ms_per_second": 1000 * cpu / seconds, "cpu_pct_of_a_core": 100 * cpu / seconds}
    results["client"]["animation_bytes_per_second"] = sum(sent) / seconds
    return results


def ramp_levels(sessions_max: int) -> list[int]:
    """1, 2, 4, 8, then every 4 up to `sessions_max`."""
    levels = [n for n in (1, 2, 4, 8) if n <= sessions_max]
    levels += list(range(12, sessions_max + 1, 4))
    if sessions_max > levels[-1]:
        levels.append(sessions_max)
    return levels


def clean(level: Level) -> bool:
    """Every session >= 24 frames/s and clean audio: >= 48 frames/s, none late, no long silence inside talk."""
    return (
        level.holds
        and min(level.audio_fps) >= 48.0
        and level.audio_gap_max_ms - AUDIO_FRAME_MS <= CLEAN_LATE_MS
        and level.longest_silence_ms <= CLEAN_SILENCE_MS
    )


def keeps_up(level: Level) -> bool:
    """Every session gets its audio (>= 48 frames/s) and its frames (>= 24/s), however late."""
    return level.holds and min(level.audio_fps) >= 48.0


def synthesis_gaps(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> int:
    """Breaks in replies the server timed between two /metrics readings (its speech_gap turn stage)."""
    return int(after.get("speech_gap", (0.0, 0.0))[1] - before.get("speech_gap", (0.0, 0.0))[1])


def marginal_cpu(levels: list[Level]) -> float | None:
    """Server CPU (% of a core) each added session costs: the slope from the first level to the last that keeps up."""
    kept = [level for level in levels if keeps_up(level)]
    if len(kept) < 2 or kept[-1].sessions == kept[0].sessions:
        return None
    return (kept[-1].cpu.server - kept[0].cpu.server) / (kept[-1].sessions - kept[0].sessions)


def server_pids(server: ServerProcess) -> list[int]:
    """The server process and its worker processes (spawned children)."""
    found = [server.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == server.pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


async def measure_mode(render: str, sessions_max: int, options: Options, log_dir: Path) -> Reply:
    """Ramp one render mode on a fresh server."""
    server = ServerProcess(log_dir, max_sessions=max(64, sessions_max * 2), workers=options.workers)
    # both modes run the same client script, talking with the same voice (read from the environment)
    os.environ["BENCH_RENDER"], os.environ["BENCH_VOICE"] = render, options.voice
    os.environ["BENCH_VIDEO"] = "count" if options.count_video else "decode"  # read by the client processes
    pool = ClientPool(CLIENT_RENDER_SCRIPT, server, log_dir, options.sessions_per_client)
    cores = os.cpu_count() or 1
    levels: list[Level] = []
    ahead: list[Reply] = []
    first_frame_ms: list[float] = []
    try:
        await server.start(timeout=300.0)
        for _ in range(600):
            if (await server.health()).get("hosts", 0) >= max(options.workers, 1):
                break
            await asyncio.sleep(0.5)
        levels_to_try = ramp_levels(sessions_max)
        for sessions in levels_to_try:
            first_frame_ms += await pool.grow_to(sessions)
            await asyncio.sleep(options.settle)
            pids = server_pids(server)
            start = CpuSnapshot.take(server.pid, pool.pids)
            server_start = sum(cpu_seconds(pid) for pid in pids)
            stages = await turn_stages(server)
            windows = await pool.measure(options.duration)
            end = CpuSnapshot.take(server.pid, pool.pids)
            server_cpu = 100.0 * (sum(cpu_seconds(pid) for pid in pids) - server_start) / (end.at - start.at)
            gaps = synthesis_gaps(stages, await turn_stages(server))
            use = CpuUse.between(start, end)
            level = level_from(sessions, options.duration, windows, CpuUse(server_cpu, use.clients, use.machine), cores)
            level = replace(level, synthesis_gaps=gaps)
            levels.append(level)
            leads = [ms for window in windows for ms in window.get("ahead_ms", [])]
            ahead.append(
                {"min": min(leads), "median": statistics.median(leads)} if leads else {"min": None, "median": None}
            )
            print(f"  render={render}: {format_level(level, ahead[-1])}", flush=True)
            if len(levels) >= 2 and not keeps_up(levels[-1]) and not keeps_up(levels[-2]):
                break
    finally:
        await pool.aclose()
        await server.aclose()
    clean_sessions = sessions_held(levels, clean)
    at_clean = next((level for level in levels if level.sessions == clean_sessions), None)
    return {
        "render": render,
        "clean_sessions": clean_sessions,
        "sessions_kept_up": sessions_held(levels, keeps_up),
        "server_cpu_pct_per_added_session": marginal_cpu(levels),
        "server_cpu_pct_per_session_at_clean": at_clean.cpu.server / at_clean.sessions if at_clean else None,
        "offer_to_first_frame_ms_median": statistics.median(first_frame_ms) if first_frame_ms else None,
        "levels": [
            {**level.to_json(), "clean": clean(level), "animation_ahead_ms": lead}
            for level, lead in zip(levels, ahead, strict=True)
        ],
    }


def format_level(level: Level, ahead: Reply) -> str:
    """One ramp row."""
    lead = f", frames ahead min {ahead['min']:.0f} ms" if ahead["min"] is not None else ""
    return (
        f"{level.sessions:>2} talking: worst {level.worst_fps:5.2f} frames/s, audio/s {min(level.audio_fps):5.1f}, "
        f"max gap {level.audio_gap_max_ms:4.0f} ms, longest silence {level.longest_silence_ms:4.0f} ms "
        f"({level.synthesis_gaps} synthesis breaks), "
        f"server {level.cpu.server:5.1f}% ({level.cpu.server / level.sessions:4.1f}%/session), "
        f"clients {level.cpu.clients:5.1f}%, load {level.load_average[0]:.1f}{lead} "
        f"-> {'clean' if clean(level) else 'keeps up' if keeps_up(level) else 'FAILS'}"
    )


def format_summary(results: Reply) -> str:
    """The modes side by side."""
    cost = results["cost_per_session"]
    lines = [
        f"CPU per talking session, TTS aside: client-rendered {cost['client']['cpu_pct_of_a_core']:.2f}% of a core "
        f"({cost['client']['animation_bytes_per_second']:.0f} animation bytes/s), "
        f"server-rendered {cost['server']['cpu_pct_of_a_core']:.2f}%"
    ]
    for mode in results["modes"]:
        per = mode["server_cpu_pct_per_added_session"]
        lines.append(
            f"render={mode['render']:<6}  talking sessions clean: {mode['clean_sessions']:>3}, "
            f"keeping up: {mode['sessions_kept_up']:>3}   "
            f"server CPU per added session: {'-' if per is None else f'{per:.1f}% of a core'}"
        )
    machine = results["machine"]
    lines.append(
        f"({machine['usable_cores']} usable cores, load average at start {results['load_average_start'][0]:.2f}; "
        "the clients share the box)"
    )
    return "\n".join(lines)


async def run(options: Options) -> Reply:
    """Client-rendered, then server-rendered, each on a fresh server."""
    started = time.monotonic()
    load_start = os.getloadavg()
    modes = []
    with tempfile.TemporaryDirectory(prefix="liveavatar-client-render-") as tmp:
        print("cost per talking session (CPU time, no network) ...", flush=True)
        cost = await asyncio.to_thread(session_cost, options.cost_seconds, Path(tmp) / "avatars")
        for render in ("client", "server"):
            print(f"  render={render}: {cost[render]['cpu_pct_of_a_core']:.2f}% of a core", flush=True)
        for render, most in (("client", options.sessions_max), ("server", options.server_sessions_max)):
            if not most:
                continue
            print(f"render={render}: starting the server, then the talking ramp ...", flush=True)
            log_dir = Path(tmp) / render
            log_dir.mkdir()  # noqa: ASYNC240 (a temporary folder, once)
            modes.append(await measure_mode(render, most, options, log_dir))
    return {
        "options": {**asdict(options), "output": str(options.output)},
        "machine": machine_info(),
        "load_average_start": load_start,
        "cost_per_session": cost,
        "modes": modes,
        "wall_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the ramps; print the table and write the JSON."""
    options = parse_args(argv)
    return run_bench(run(options), options.output, format_summary)


if __name__ == "__main__":
    sys.exit(main())
