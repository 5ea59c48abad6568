"""The one sync bridge (design.md lesson 4): sync callers run the async core on a private event
loop in a daemon thread. No sync twins of async code exist anywhere.

The bridge is loop-affine: everything it runs lives on its own loop, so objects bound to a loop
(httpx clients, subprocess pipes) created through it are always used from that same loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["SyncBridge"]

T = TypeVar("T")
_SENTINEL = object()


class SyncBridge:
    """Run coroutines and async iterators from synchronous code on one background loop."""

    #: Seconds an interrupted or abandoned call may take to clean up on the loop (cancel the
    #: upstream run, close the stream) before control returns to the caller anyway.
    cancel_grace_s: float = 10.0

    _default: SyncBridge | None = None
    _default_lock = threading.Lock()

    def __init__(self, name: str = "cursorpipe-sync") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> SyncBridge:
        """The process-wide bridge (started on first use, stopped at interpreter exit)."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = SyncBridge()
                atexit.register(cls._default.close)
            return cls._default

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop (starting the thread if needed)."""
        with self._lock:
            if (
                self._loop is None
                or self._loop.is_closed()
                or not self._thread
                or not self._thread.is_alive()
            ):
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def _main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=_main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _check_thread(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                "SyncBridge.run() was called from inside the bridge's own loop; await the coroutine instead"
            )

    def run(self, work: Callable[[], Awaitable[T]] | Awaitable[T], timeout: float | None = None) -> T:
        """Run ``work`` to completion on the bridge loop and return its result.

        ``work`` is an awaitable (a coroutine) or a zero-argument callable returning one, the same
        two forms :meth:`iterate` takes; the callable form creates the coroutine on the loop.
        ``KeyboardInterrupt`` (Ctrl-C) or a ``timeout`` cancels the work on the loop and waits (at
        most :attr:`cancel_grace_s`) for its cleanup to finish before re-raising, so an interrupted
        request has really stopped when this returns.
        """
        try:
            self._check_thread()
        except RuntimeError:
            if asyncio.iscoroutine(work):
                work.close()
            raise
        loop = self.loop
        finished = threading.Event()

        async def _call() -> T:
            try:
                aw = work() if callable(work) else work
                return await aw
            finally:
                finished.set()

        fut: Future[T] = asyncio.run_coroutine_threadsafe(_call(), loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            finished.wait(self.cancel_grace_s)
            raise

    def iterate(self, work: Callable[[], AsyncIterable[T]] | AsyncIterable[T]) -> Iterator[T]:
        """Iterate an async iterable synchronously on the bridge loop.

        ``work`` is an async iterable (an async generator) or a zero-argument callable returning
        one, as in :meth:`run`. Leaving the loop early (``break``, an exception, closing the
        generator) closes the async iterator on the loop; ``KeyboardInterrupt`` while waiting for
        the next item first cancels that wait, then closes the iterator, so the upstream request is
        cancelled rather than left running.
        """
        self._check_thread()
        loop = self.loop
        holder: dict[str, Any] = {}

        async def _next() -> Any:
            holder["task"] = asyncio.current_task()
            if "it" not in holder:
                source = work() if callable(work) else work
                holder["it"] = aiter(source)
            try:
                return await anext(holder["it"])
            except StopAsyncIteration:
                return _SENTINEL

        async def _close() -> None:
            task = holder.get("task")
            if task is not None and not task.done():
                # A Ctrl-C arrived while an item was awaited: stop that wait before closing, or
                # aclose() would find the generator still running.
                task.cancel()
                await asyncio.wait([task])
            aclose = getattr(holder.get("it"), "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                item = asyncio.run_coroutine_threadsafe(_next(), loop).result()
                if item is _SENTINEL:
                    return
                yield item
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(), loop).result(self.cancel_grace_s)

    def close(self) -> None:
        """Stop the loop thread. Pending work is cancelled. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        if not loop.is_running():
            loop.close()
