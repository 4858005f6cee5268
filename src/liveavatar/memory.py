"""Memory hygiene for the long-running processes that hold sessions (the API process and session workers).

Measured with bench/soak.py (2 talking sessions, churn and fuzz, 4 min) and a probe in the server process
(mallinfo2, gc object counts by type, chains of referrers), two causes made its resident memory ratchet up:

- glibc's allocator fragmented across threads: media encoding, TTS and the pipe readers run in many threads,
  each with its own malloc arena (up to 8 per core), and the freed space of frames and speech stayed in
  those arenas: free-but-kept bytes grew 120 -> 207 MB while the bytes in use stayed ~280-300 MB. With two
  arenas the free part stayed ~20-55 MB. `tune_allocator()` caps the arenas at two (what
  MALLOC_ARENA_MAX=2 does) and `release_memory()` hands free pages back to the system (malloc_trim).
- Closed sessions were freed late. A session's peer (aiortc: RTP receivers with 1000-bucket rate
  counters, codecs, DTLS) and its renderer are reference cycles, which only a full collection frees; with
  the ~220 k objects start-up leaves in the heap, that waits for ~55 k new survivors (several closed
  sessions: up to 6 closed peers were seen waiting) and then walks everything (1-3 s on a busy 2-core
  box). Meanwhile the arenas grow to hold them. `release_memory()` runs the collection when a session
  ends, and `freeze_startup()` moves the start-up objects out of its way, so that it takes ~0 ms.

A third step was onnxruntime's CPU arena under Piper: it grew by 128 MiB, then 256 MiB, for the longest
sentence so far, and never shrank; the Piper session runs without it (speech/piper.py).

Everything here is a no-op where glibc is not the C library.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)
M_ARENA_MAX = -8
"""mallopt() parameter number of the arena cap (glibc malloc.h)."""
ARENA_MAX = 2
TRIM_EVERY = 10.0
"""Seconds between two malloc_trim calls in a process that holds sessions."""


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # musl or another libc: no mallopt/malloc_trim
        return None
    return libc


def tune_allocator() -> None:
    """Cap glibc's malloc arenas (first thing in a process, before its threads start).

    MALLOC_ARENA_MAX in the environment wins (glibc reads it itself); scripts/run.sh sets it too.
    """
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    if libc.mallopt(M_ARENA_MAX, ARENA_MAX) != 1:
        log.warning("could not cap malloc arenas")


def freeze_startup() -> None:
    """Move every object alive now (imports, loaded models) out of the cyclic collector's work.

    Call when no session exists (before the first, and again once the models are loaded if none started
    meanwhile): frozen objects are never collected, and a full collection then only walks what sessions
    allocated.
    """
    gc.collect()
    gc.freeze()


_speaking: set[Callable[[], bool]] = set()
"""What tells whether this process's sessions are speaking now (see `hold_trims_while`)."""


def hold_trims_while(speaking: Callable[[], bool]) -> Callable[[], None]:
    """Trim only while `speaking()` is false; returns what undoes this.

    malloc_trim holds each arena's lock while it walks it: in a worker holding 4 talking sessions it took
    10-77 ms every 10 s, and the media thread's next allocation waited as long, so audio frames went out
    that late. A host whose sessions talk without pause keeps its arenas' high-water mark, which it reuses.
    """
    _speaking.add(speaking)
    return lambda: _speaking.discard(speaking)


def quiet() -> bool:
    """Whether no session of this process speaks now (a trim stalls nothing audible)."""
    return not any(speaking() for speaking in list(_speaking))


def trim() -> None:
    """Hand free heap pages back to the system (glibc keeps freed memory in its arenas until asked)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """Trim every `every` seconds while no session speaks, in a thread (malloc_trim runs without the GIL).

    Speech synthesis frees tens of MB of tensors after every sentence; without this they stay in the
    arenas between session ends.
    """
    while True:
        await asyncio.sleep(every)
        if quiet():
            await asyncio.to_thread(trim)


def release_memory(trim_heap: bool = True) -> None:
    """Free what ended sessions left in reference cycles now, and hand free heap pages back to the system
    when `trim_heap` (pass `quiet()`, asked on the event loop: while a session speaks the periodic trim does it
    once all are quiet)."""
    gc.collect()
    if trim_heap:
        trim()
