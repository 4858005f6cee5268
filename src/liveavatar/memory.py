"""Memory hygiene for the long-running processes that hold sessions (the API process and session workers).

Measured with bench/soak.py and a probe in the server process (issue 15), two causes made a talking
server's resident memory grow for as long as it ran:

- Closed sessions were freed late. A session's peer (aiortc: RTP receivers with 1000-bucket rate
  counters, codecs, DTLS) and its renderer form reference cycles, so only a full (generation-2)
  collection frees them; the ~1 M objects the models and imports leave in the heap put that collection
  off for as long as a long soak, so every closed session's memory stayed in use until then.
  `release_memory()` after a session ends runs the collection then, and `freeze_startup()` moves what
  was loaded at start out of the collector's way so that this collection is cheap.
- glibc's allocator fragmented across threads: media encoding, TTS and the pipe readers run in many
  threads, each with its own malloc arena (up to 8 per core), and the freed space of 20 ms frames stayed
  in those arenas (~190 MB free but unreturned after four minutes with two sessions, against ~45 MB with
  two arenas). `tune_allocator()` caps the arenas at two (what MALLOC_ARENA_MAX=2 does) and
  `release_memory()` hands free heap pages back to the system (malloc_trim).

Everything here is a no-op where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from functools import cache

log = logging.getLogger(__name__)
M_ARENA_MAX = -8
"""mallopt() parameter number of the arena cap (glibc malloc.h)."""
ARENA_MAX = 2


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

    Call once, after start-up and before any session exists: frozen objects are never collected, and a
    full collection then only walks what sessions allocated.
    """
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """Free what ended sessions left in reference cycles now, and hand free heap pages back to the system."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
