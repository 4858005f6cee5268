"""Real servers for tests: liveavatar subprocesses on loopback, and a throwaway PostgreSQL."""

from __future__ import annotations

import contextlib
import functools
import glob
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging each request."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@contextlib.contextmanager
def web_server(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 (documents, images, videos for fetch tests); yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_folder(root: Path) -> contextlib.AbstractContextManager[str]:
    """A web server for the files in `root`; yields its base URL."""
    return web_server(functools.partial(QuietFiles, directory=str(root)))


def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> str:
    """Run the `liveavatar` command; its stdout."""
    result = subprocess.run(
        [str(VENV_BIN / "liveavatar"), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_key(data_dir: Path, name: str, env: dict[str, str] | None = None) -> str:
    """A new API key made with `liveavatar keys create` (the key is its last line)."""
    return cli("keys", "create", "--name", name, data_dir=data_dir, env=env).strip().splitlines()[-1]


@dataclass
class Server:
    """A `liveavatar serve` process on a loopback port."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        """Start and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        command = [str(VENV_BIN / "liveavatar"), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if "--workers" not in self.args and "LIVEAVATAR_WORKERS" not in self.env:
            command += ["--workers", "0"]  # sessions in the server process: fast to start (a test may ask for workers)
        with self.log_path.open("a") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [*command, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "LIVEAVATAR_ICE_HOSTS": "127.0.0.1", **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"server did not start:\n{self.log()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop it (SIGTERM: graceful; SIGKILL: as if it died); its exit code (-9 if it had to be killed)."""
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        self.process = None
        return code

    def log(self) -> str:
        """What the server printed."""
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


class Postgres:
    """A private PostgreSQL cluster in a temporary folder (run as `postgres` when we are root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL server binaries not found: install the `postgresql` package")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="liveavatar-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        """initdb and start on a loopback port."""
        data = str(self.dir / "data")
        self._run(str(self.bin / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-o", options, "-w", "-l", str(self.dir / "log"), "start")
        return self

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the cluster and remove its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Start `server` for the duration of the block."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
