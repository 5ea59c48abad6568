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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["SyncBridge"]

T = TypeVar("T")
_SENTINEL = object()


class SyncBridge:
    """Run coroutines and async iterators from synchronous code on one background loop."""

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

    def run(
        self, factory: Callable[[], Awaitable[T]] | Coroutine[Any, Any, T], timeout: float | None = None
    ) -> T:
        """Run a coroutine (or a zero-argument factory returning one) to completion and return its
        result. ``KeyboardInterrupt`` or a timeout cancels the coroutine on the loop."""
        try:
            self._check_thread()
        except RuntimeError:
            if asyncio.iscoroutine(factory):
                factory.close()
            raise
        loop = self.loop

        async def _call() -> T:
            aw = factory() if callable(factory) else factory
            return await aw

        fut: Future[T] = asyncio.run_coroutine_threadsafe(_call(), loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def iterate(self, factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate an async iterator (created on the bridge loop by ``factory``) synchronously.

        Closing the returned generator early (``break``) closes the async iterator on the loop.
        """
        self._check_thread()
        loop = self.loop
        holder: dict[str, AsyncIterator[T]] = {}

        async def _next() -> Any:
            if "it" not in holder:
                holder["it"] = factory()
            try:
                return await holder["it"].__anext__()
            except StopAsyncIteration:
                return _SENTINEL

        async def _close() -> None:
            it = holder.get("it")
            aclose = getattr(it, "aclose", None)
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
                asyncio.run_coroutine_threadsafe(_close(), loop).result(10)

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
