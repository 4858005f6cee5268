"""Transport benchmark: join latency, data-channel round trip, server CPU per session, sessions held at 25 fps.

    .venv/bin/python bench/transport.py [--sessions-max N] [--duration S]

Starts its own `liveavatar serve` on loopback (temporary data dir) and measures it from client processes
(bench/transport_client.py), so the clients' VP8 decoding never takes the server's GIL. Prints numbers,
asserts nothing, writes bench/results/transport.json. Everything it starts is stopped, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx


def optional_module(name: str) -> ModuleType | None:
    """An installed module, or None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


psutil = optional_module("psutil")  # without it, /proc/<pid>/stat is read

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
CLIENT_SCRIPT = BENCH_DIR / "transport_client.py"
CPU_LEVELS = (0, 1, 2, 4)
HOLD_FPS = 24.0
TARGET_INTERVAL_MS = 40.0
SETTLE_SECONDS = 2.0
Reply = dict[str, Any]


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


# --- CPU accounting ------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far; 0 when it is gone."""
    if psutil is not None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU used so far by the server, the client processes and the whole machine."""

    at: float
    server: float
    clients: float
    busy: int
    total: int

    @classmethod
    def take(cls, server_pid: int, client_pids: list[int]) -> CpuSnapshot:
        """Read the counters now."""
        busy, total = machine_jiffies()
        clients = sum(cpu_seconds(pid) for pid in client_pids)
        return cls(time.monotonic(), cpu_seconds(server_pid), clients, busy, total)


@dataclass(frozen=True)
class CpuUse:
    """CPU over a window, in % of one core (machine: % of all cores)."""

    server: float
    clients: float
    machine: float

    @classmethod
    def between(cls, start: CpuSnapshot, end: CpuSnapshot) -> CpuUse:
        """Use between two snapshots."""
        wall = max(end.at - start.at, 1e-9)
        machine = 100.0 * (end.busy - start.busy) / max(end.total - start.total, 1)
        return cls(100.0 * (end.server - start.server) / wall, 100.0 * (end.clients - start.clients) / wall, machine)

    def others(self, cores: int) -> float:
        """What everything else on the machine used (other engineers' work), in % of one core."""
        return max(0.0, self.machine * cores - self.server - self.clients)


# --- processes -----------------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child must not dlopen between fork and exec


def die_with_parent() -> None:
    """Child-side hook: SIGTERM this process when the bench dies, even by SIGKILL (Linux prctl)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


async def spawn(
    *command: str, log: IO[bytes], stdout: int | IO[bytes] = asyncio.subprocess.PIPE, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start a child in its own session (Ctrl-C reaches only the bench, which then stops it in order)."""
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=stdout,
        stderr=log,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """`liveavatar serve` on a loopback port with its own data dir and API key."""

    data_dir: Path
    max_sessions: int
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    api_key: str = ""

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.data_dir / "server.log"

    def env(self) -> dict[str, str]:
        """Loopback ICE and limits no bench run reaches."""
        return {
            "LIVEAVATAR_ICE_HOSTS": "127.0.0.1",
            "LIVEAVATAR_RATE_LIMIT_PER_MINUTE": "100000",
            "LIVEAVATAR_RATE_LIMIT_BURST": "10000",
        }

    async def start(self, timeout: float = 90.0) -> None:
        """Create an API key, start the server and wait until /healthz answers."""
        self.api_key = await self._create_key()
        command = [str(VENV_BIN / "liveavatar"), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            args = (*command, "--max-sessions", str(self.max_sessions))
            self.process = await spawn(*args, log=log, stdout=log, env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                await self.health()
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    async def _create_key(self) -> str:
        command = [str(VENV_BIN / "liveavatar"), "keys", "create", "--name", "bench", "--data-dir", str(self.data_dir)]
        with (self.data_dir / "keys.log").open("ab") as log:
            process = await spawn(*command, log=log)
            out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"`liveavatar keys create` failed: {(self.data_dir / 'keys.log').read_text()}")
        return out.decode().strip().splitlines()[-1]

    async def health(self) -> Reply:
        """The server's /healthz answer."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            response = await http.get(f"{self.url}/healthz")
            response.raise_for_status()
            body: Reply = response.json()
            return body

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the server holds no live session (closes from earlier phases have finished)."""
        for _ in range(int(timeout / 0.2)):
            if not (await self.health()).get("live_sessions", 0):
                return
            await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        """Stop the server (graceful SIGTERM: it closes its sessions)."""
        if self.process is not None:
            await stop_process(self.process, grace=30.0)


class ClientProcess:
    """One bench/transport_client.py process, driven by JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.sessions = 0

    @classmethod
    async def start(cls, server: ServerProcess, log_dir: Path, index: int) -> ClientProcess:
        """Start a client process for `server`."""
        log_path = log_dir / f"client-{index}.log"
        with log_path.open("ab") as log:
            process = await spawn(sys.executable, str(CLIENT_SCRIPT), server.url, server.api_key, log=log)
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        """The client's process id."""
        return self.process.pid

    async def request(self, op: str, timeout: float = 180.0, **params: Any) -> Reply:
        """Send one request and wait for its answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **params}) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process exited:\n{self.log_path.read_text()[-3000:]}")
        reply: Reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"client {op} failed: {reply['error']}")
        return reply

    async def aclose(self) -> None:
        """Ask it to close its sessions and quit; stop it if it does not."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(b'{"op": "quit"}\n')
                await self.process.stdin.drain()
                self.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 20.0)
        await stop_process(self.process, grace=5.0)


class ClientPool:
    """Client processes holding the streaming sessions, `per_client` each (filled in order)."""

    def __init__(self, server: ServerProcess, log_dir: Path, per_client: int) -> None:
        self.server = server
        self.log_dir = log_dir
        self.per_client = per_client
        self.clients: list[ClientProcess] = []

    @property
    def sessions(self) -> int:
        """Streaming sessions held by all clients."""
        return sum(client.sessions for client in self.clients)

    @property
    def pids(self) -> list[int]:
        """Process ids of the clients."""
        return [client.pid for client in self.clients]

    async def first(self) -> ClientProcess:
        """The first client process (started on demand)."""
        if not self.clients:
            self.clients.append(await ClientProcess.start(self.server, self.log_dir, 0))
        return self.clients[0]

    async def grow_to(self, total: int) -> list[float]:
        """Join sessions until `total` stream; offer -> first frame (ms) of each new one."""
        first_ms: list[float] = []
        while self.sessions < total:
            client = await self._with_room()
            count = min(self.per_client - client.sessions, total - self.sessions)
            reply = await client.request("add", count=count)
            client.sessions = int(reply["sessions"])
            first_ms += reply["first_frame_ms"]
        return first_ms

    async def _with_room(self) -> ClientProcess:
        for client in self.clients:
            if client.sessions < self.per_client:
                return client
        client = await ClientProcess.start(self.server, self.log_dir, len(self.clients))
        self.clients.append(client)
        return client

    async def measure(self, seconds: float) -> list[Reply]:
        """Per-session frame windows from every client, measured at the same time."""
        busy = [client for client in self.clients if client.sessions]
        replies = await asyncio.gather(*(client.request("measure", seconds=seconds) for client in busy))
        return [session for reply in replies for session in reply["sessions"]]

    async def aclose(self) -> None:
        """Close every client (each closes its sessions first)."""
        await asyncio.gather(*(client.aclose() for client in self.clients))


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: list[float]) -> Reply:
    """n, median, p95, min and max of a sample."""
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p95": percentile(values, 95),
        "min": min(values, default=float("nan")),
        "max": max(values, default=float("nan")),
    }


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


def source_revision() -> str:
    """The commit the server code came from, `+dirty` when src/ has changes not committed yet."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(BENCH_DIR.parent), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--", "src") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def server_package() -> str:
    """Where the `liveavatar` package the server runs is imported from (the checkout's src/ normally)."""
    spec = importlib.util.find_spec("liveavatar")
    return str(Path(spec.origin).parent) if spec is not None and spec.origin else "not found"


def machine_info() -> Reply:
    """Cores, load average and software of the machine the bench ran on."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_counter": "psutil" if psutil is not None else "/proc/<pid>/stat",
        "source_revision": source_revision(),
        "server_package": server_package(),
    }


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


def write_json(path: Path, results: Reply) -> None:
    """Write the results as JSON (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(results), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- main ----------------------------------------------------------------------------------------


async def run(options: Options) -> Reply:
    """Start a server and client processes, run every phase, stop everything; the results."""
    started = time.monotonic()
    load_start = os.getloadavg()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        server = ServerProcess(Path(tmp), max_sessions=max(64, options.sessions_max * 2))
        pool = ClientPool(server, Path(tmp), options.sessions_per_client)
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


async def run_until_stopped(options: Options) -> Reply:
    """`run`, cancelled (so its clean-up runs) on SIGTERM as asyncio already does on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the summary and write the JSON."""
    options = parse_args(argv)
    try:
        results = asyncio.run(run_until_stopped(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: server and clients stopped, temporary files removed", file=sys.stderr)
        return 130
    print(format_summary(results))
    write_json(options.output, results)
    print(f"results written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
