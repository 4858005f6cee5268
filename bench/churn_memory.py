"""Memory per create/join/close cycle, with the server in this process (issue 15, finding 10).

    python bench/churn_memory.py --cycles 50            # joined sessions
    python bench/churn_memory.py --cycles 50 --no-join  # created and closed only

Runs the app (sessions in-process: workers=0) under uvicorn on a loopback port and an aiortc client in
the same event loop; after a warm-up it runs the cycles and prints RSS every 10 cycles, then the asyncio
tasks still alive by name (a closed session must leave none behind). Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

from common import free_port
from liveavatar.app import create_app
from liveavatar.client import Connection
from liveavatar.config import Settings
from liveavatar.security import generate_key, hash_key, key_prefix
from liveavatar.store import Store

SESSIONS = "/api/open/v4/liveAvatar/session"
WATCHED = ("Session", "Peer", "RTCPeerConnection", "Renderer", "Turn", "Speaker")
"""Objects a closed session must not leave behind (counted by type name at the end)."""


def rss_mb() -> float:
    """This process's resident memory, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="liveavatar-churn-"))
    settings = Settings(
        data_dir=data,
        workers=0,
        ice_hosts=["127.0.0.1"],
        max_sessions=64,
        rate_limit_per_minute=100_000,
        rate_limit_burst=10_000,
    )
    store = Store(settings.resolved_database_url)
    await store.migrate()
    key = generate_key()
    await store.keys.add("churn", hash_key(key), key_prefix(key))
    await store.aclose()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    for _ in range(600):  # uvicorn has no "started" event to await
        if server.started:
            break
        await asyncio.sleep(0.1)
    url = f"http://127.0.0.1:{port}{SESSIONS}"
    try:
        async with httpx.AsyncClient(headers={"x-api-key": key}, timeout=30) as http:

            async def cycle() -> None:
                session = (await http.post(f"{url}/create", json={"avatar_id": "astronaut"})).json()["data"]
                conn = None
                if args.join:
                    conn = await Connection.join(session["credentials"], ice_hosts=["127.0.0.1"])
                    for _ in range(5):
                        await asyncio.wait_for(conn.video.get(), 15)
                    if args.talk:  # what bench/soak.py's churn loop does: a reply started, then interrupted
                        conn.send_chat("A short hello from the churn loop.")
                        await conn.interrupt()
                await http.post(f"{url}/close", json={"id": session["_id"]})
                if conn is not None:
                    await conn.aclose()

            for _ in range(args.warmup):
                await cycle()
            await asyncio.sleep(1)
            gc.collect()
            start_rss, start = rss_mb(), time.monotonic()
            print(f"after {args.warmup} warm-up cycles: {start_rss:.0f} MB", flush=True)
            for number in range(1, args.cycles + 1):
                await cycle()
                if number % 10 == 0:
                    gc.collect()
                    print(f"  after {number:>4} cycles: {rss_mb():.0f} MB", flush=True)
            await asyncio.sleep(2)
            started = time.perf_counter()
            found = gc.collect()
            print(f"a full collection found {found} objects in {(time.perf_counter() - started) * 1000:.0f} ms")
            end_rss = rss_mb()
            print(
                f"join={args.join} cycles={args.cycles}: RSS {start_rss:.0f} -> {end_rss:.0f} MB, "
                f"{(end_rss - start_rss) / args.cycles:.2f} MB per cycle ({time.monotonic() - start:.0f} s)"
            )
            names = collections.Counter(
                (task.get_name().split("-")[0], task.get_coro().__qualname__)  # type: ignore[union-attr]
                for task in asyncio.all_tasks()
            )
            print(f"tasks alive: {sum(names.values())}: {names.most_common(8)}")
            kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
            print("objects alive: " + ", ".join(f"{name} {kinds[name]}" for name in WATCHED))
    finally:
        server.should_exit = True
        await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-join", dest="join", action="store_false", help="create and close without joining")
    parser.add_argument("--talk", action="store_true", help="start a reply and interrupt it before closing")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
