"""Calls, streams and notices between two processes over one multiprocessing Connection.

Both ends run an event loop; a thread per end reads the pipe (blocking `recv`) and hands each message to the
loop, so a dead peer process is seen at once (EOF) and no loop ever blocks on a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from liveavatar.errors import Code, LiveAvatarError
from liveavatar.session.host import HostGone, RemoteError

log = logging.getLogger(__name__)
Handler = Callable[..., Awaitable[Any]]
StreamHandler = Callable[..., AsyncIterator[Any]]
_END = object()


class Channel:
    """One end of a pipe: call the other end's handlers, stream from them, send notices; answer its calls."""

    def __init__(
        self,
        conn: Connection,
        *,
        handlers: dict[str, Handler] | None = None,
        streams: dict[str, StreamHandler] | None = None,
        on_notice: Callable[[Any], None] | None = None,
        name: str = "channel",
    ) -> None:
        self._conn = conn
        self._handlers = handlers or {}
        self._streams = streams or {}
        self._on_notice = on_notice
        self.name = name
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._items: dict[int, asyncio.Queue[Any]] = {}
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self.lost = asyncio.Event()
        """Set when the other end is gone (its process exited or closed the pipe)."""

    def start(self) -> None:
        """Start reading (call from the loop that will handle the messages)."""
        self._loop = asyncio.get_running_loop()
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                log.exception("%s: unreadable message", self.name)
                continue
            try:
                loop.call_soon_threadsafe(self._dispatch, message)
            except RuntimeError:
                return  # the loop is closed: nobody is listening any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_lost)

    def _send(self, message: tuple[Any, ...]) -> None:
        if self.lost.is_set():
            raise HostGone(f"{self.name}: the other end is gone")
        try:
            self._conn.send(message)
        except (OSError, EOFError) as exc:
            self._on_lost()
            raise HostGone(f"{self.name}: the other end is gone") from exc

    # --- asking the other end ------------------------------------------------------------------

    async def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Run `method` at the other end; its result, or its error raised here."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[call_id] = future
        try:
            self._send(("call", call_id, method, args))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._replies.pop(call_id, None)

    async def stream(self, method: str, *args: Any) -> AsyncGenerator[Any, None]:
        """Iterate over what `method` yields at the other end; closing this iterator stops it there."""
        call_id = next(self._ids)
        items: asyncio.Queue[Any] = asyncio.Queue()
        self._items[call_id] = items
        finished = False
        try:
            self._send(("stream", call_id, method, args))
            while True:
                item = await items.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            self._items.pop(call_id, None)
            if not finished and not self.lost.is_set():
                with contextlib.suppress(HostGone):
                    self._send(("cancel", call_id))

    def notify(self, notice: Any) -> None:
        """Send a notice (no answer expected)."""
        self._send(("notice", notice))

    # --- what arrives ---------------------------------------------------------------------------

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "notice":
            if self._on_notice is not None:
                self._on_notice(message[1])
        elif kind == "reply":
            _, call_id, ok, value = message
            future = self._replies.get(call_id)
            if future is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value.rebuild() if isinstance(value, RemoteError) else HostGone(str(value)))
        elif kind in ("item", "done"):
            queue = self._items.get(message[1])
            if queue is not None:
                if kind == "item":
                    queue.put_nowait(message[2])
                else:
                    error = message[2]
                    queue.put_nowait(error.rebuild() if isinstance(error, RemoteError) else _END)
        elif kind == "call":
            _, call_id, method, args = message
            self._serve(call_id, self._answer(call_id, method, args))
        elif kind == "stream":
            _, call_id, method, args = message
            self._serve(call_id, self._feed(call_id, method, args))
        elif kind == "cancel":
            task = self._serving.get(message[1])
            if task is not None:
                task.cancel()

    def _serve(self, call_id: int, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._serving[call_id] = task
        task.add_done_callback(lambda _: self._serving.pop(call_id, None))

    async def _answer(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            handler = self._handlers[method]
            value = await handler(*args)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            with contextlib.suppress(HostGone):
                self._send(("reply", call_id, False, _plain_error(method, exc)))
            return
        with contextlib.suppress(HostGone):
            self._send(("reply", call_id, True, value))

    async def _feed(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        error: RemoteError | None = None
        try:
            async for item in self._streams[method](*args):
                self._send(("item", call_id, item))
        except (asyncio.CancelledError, HostGone):
            return
        except Exception as exc:
            error = _plain_error(method, exc)
        with contextlib.suppress(HostGone):
            self._send(("done", call_id, error))

    def _on_lost(self) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(HostGone(f"{self.name}: the other end is gone"))
        for queue in self._items.values():
            queue.put_nowait(HostGone(f"{self.name}: the other end is gone"))
        for task in list(self._serving.values()):
            task.cancel()

    async def aclose(self, wait: float = 5.0) -> None:
        """Stop answering and close the pipe, once the other end has closed its side (or `wait` passed)."""
        for task in list(self._serving.values()):
            task.cancel()
        if self._serving:
            await asyncio.gather(*self._serving.values(), return_exceptions=True)
        if self._reader is not None:
            # Closing a pipe under a thread blocked reading it is unreliable: let EOF end the reader first.
            await asyncio.to_thread(self._reader.join, wait)
        self._on_lost()
        self._conn.close()


def _plain_error(method: str, exc: Exception) -> RemoteError:
    if isinstance(exc, LiveAvatarError):
        return RemoteError.of(exc)
    log.error("%s failed", method, exc_info=exc)
    return RemoteError(int(Code.PROCESSING_ERROR), f"internal error in {method}")
