"""load_once: each model loads once per process, whatever the threads and however the call is spelled."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from liveavatar.loading import load_once


def test_concurrent_callers_share_one_load_per_argument_set() -> None:
    calls: list[tuple[str, int]] = []
    gate = threading.Event()

    @load_once
    def load(name: str, threads: int = 2) -> object:
        gate.wait(5)  # every caller arrives while the first load is still running
        calls.append((name, threads))
        return object()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(load, "a") for _ in range(6)] + [pool.submit(load, "a", threads=2)]
        gate.set()
        results = {id(future.result()) for future in futures}
    assert len(results) == 1 and calls == [("a", 2)]
    assert load("a", 3) is not load("a")
    assert calls == [("a", 2), ("a", 3)]


def test_a_failed_load_is_tried_again() -> None:
    attempts: list[int] = []

    @load_once
    def load(path: str) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("not there yet")
        return path.upper()

    with pytest.raises(OSError):
        load("x")
    assert load("x") == "X" and load("x") == "X"
    assert len(attempts) == 2
