"""Time helpers shared by the API and the store."""

from __future__ import annotations

import secrets
import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (the API's timestamp unit)."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A fresh opaque object id (24 hex characters, like the original API's ids)."""
    return secrets.token_hex(12)
