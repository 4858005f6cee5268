"""One synthesis thread per engine, shared by a process's sessions and served earliest deadline first.

A request's deadline is the moment (on `time.perf_counter`) its session's queued speech runs out: a session
about to fall silent goes before one with seconds of speech still queued, and a reply's first piece
(nothing queued: due now) before the look-ahead of replies already playing. Equal deadlines go in order of
arrival. The work runs in the scheduler's own thread, off the event loop and out of the default pool
(where aiortc encodes media). A request its caller gives up on leaves the queue, or, already running, is
told to stop (its `Abandon`), so that an interrupted reply does not hold the thread for the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from liveavatar.speech.base import Abandon

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(order=True)
class _Job(Generic[T]):
    due: float
    seq: int
    work: Callable[[Abandon], T] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[T] = field(compare=False)
    abandon: Abandon = field(compare=False, default_factory=Abandon)


class DeadlineScheduler:
    """Runs blocking jobs one at a time in one thread, the waiting job with the earliest deadline first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready = threading.Condition()
        self._waiting: list[_Job[Any]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable[[Abandon], T], due: float | None = None) -> asyncio.Future[T]:
        """Queue `work` to run by `due` (perf_counter seconds; None: now); its result on the caller's loop.

        Cancelling the future before the job starts takes it off the queue; once it runs, it sets the
        `Abandon` the work was given (work that can stop early does so) and whatever it gives is dropped.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(time.perf_counter() if due is None else due, next(self._order), work, loop, future)
        with self._ready:
            self._waiting.append(job)
            if self._thread is None:
                # A daemon: it holds no state worth finishing at interpreter exit, and it must not block it.
                self._thread = threading.Thread(target=self._serve, name=f"{self.name}-synthesis", daemon=True)
                self._thread.start()
            self._ready.notify()
        future.add_done_callback(lambda done: self._withdraw(job) if done.cancelled() else None)
        return future

    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        with self._ready:
            return len(self._waiting)

    def _withdraw(self, job: _Job[Any]) -> None:
        with self._ready:
            if job in self._waiting:
                self._waiting.remove(job)
                return
        job.abandon.set()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                job = min(self._waiting)
                self._waiting.remove(job)
            try:
                result = job.work(job.abandon)
            except BaseException as exc:  # delivered to the caller, whatever it is; this thread serves on
                self._settle(job, None, exc)
            else:
                self._settle(job, result, None)

    @staticmethod
    def _settle(job: _Job[Any], result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if job.future.done():
                return  # cancelled while it ran
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:
            log.debug("the loop of a %s synthesis closed before its result came", job.work)
