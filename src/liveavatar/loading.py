"""Models load once per process: one decorator for every loader (speech, VAD, STT, LLM)."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def load_once(load: Callable[P, T]) -> Callable[P, T]:
    """`load` run at most once per set of arguments (defaults filled in); concurrent callers wait for the first.

    Loads of one loader run one at a time (they are big and the cores are few); a failed load is not
    remembered, so the next call tries again.
    """
    signature = inspect.signature(load)
    lock = threading.Lock()
    loaded: dict[Hashable, T] = {}

    @functools.wraps(load)
    def cached(*args: P.args, **kwargs: P.kwargs) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = (bound.args, tuple(sorted(bound.kwargs.items())))
        with lock:
            if key not in loaded:
                loaded[key] = load(*args, **kwargs)
            return loaded[key]

    return cached
