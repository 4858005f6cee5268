"""Shared helpers of the benchmarks: server and client processes, CPU accounting, statistics, results.

The benches (bench/transport.py, bench/speaking.py) start `liveavatar serve` as a subprocess and drive client
processes over JSON lines on stdin/stdout; everything here is about running and measuring those processes.
"""

from __future__ import annotations

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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

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
Reply = dict[str, Any]
T = TypeVar("T")


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
    workers: int = 0
    """Worker processes holding sessions (0: in the server process, as every bench measured before)."""

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
            args = (*command, "--max-sessions", str(self.max_sessions), "--workers", str(self.workers))
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
    """One measuring client process (bench/transport_client.py, bench/speaking_client.py), driven by JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.sessions = 0

    @classmethod
    async def start(cls, script: Path, server: ServerProcess, log_dir: Path, index: int) -> ClientProcess:
        """Start the client `script` (run as `script URL API_KEY`) for `server`."""
        log_path = log_dir / f"client-{index}.log"
        with log_path.open("ab") as log:
            process = await spawn(sys.executable, str(script), server.url, server.api_key, log=log)
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
    """Client processes (each running `script`) holding the streaming sessions, `per_client` each (filled in order).

    The script answers `{"op": "add", "count": n}` with `{"sessions": total, "first_frame_ms": [...]}` and
    `{"op": "measure", "seconds": s}` with `{"sessions": [one window per session, ...]}`.
    """

    def __init__(self, script: Path, server: ServerProcess, log_dir: Path, per_client: int) -> None:
        self.script = script
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
            self.clients.append(await ClientProcess.start(self.script, self.server, self.log_dir, 0))
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
        client = await ClientProcess.start(self.script, self.server, self.log_dir, len(self.clients))
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


# --- results -------------------------------------------------------------------------------------


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


def write_json(path: Path, results: Reply) -> None:
    """Write the results as JSON (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(results), indent=2) + "\n")


def finite(value: Any) -> Any:
    """`value` with every NaN replaced by None, all the way down (JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# --- main ----------------------------------------------------------------------------------------


async def cancel_on_sigterm(work: Awaitable[T]) -> T:
    """Await `work` in a task that SIGTERM cancels (so its clean-up runs), as asyncio already does on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await work


def run_bench(work: Awaitable[Reply], output: Path, format_summary: Callable[[Reply], str]) -> int:
    """Run a bench (SIGTERM and Ctrl-C clean up), print its summary, write its JSON; returns the exit code."""
    try:
        results = asyncio.run(cancel_on_sigterm(work))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: server and clients stopped, temporary files removed", file=sys.stderr)
        return 130
    print(format_summary(results))
    write_json(output, results)
    print(f"results written to {output}")
    return 0
