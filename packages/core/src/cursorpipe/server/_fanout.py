"""Parallel runs of one request (``n`` > 1 choices) merged into one ordered queue, with the
timeout the turn loop needs for keep-alives (integrations.md §4.4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from starlette.types import Receive

from ..types import Event, TransportInfo

__all__ = ["BODY_READY_KEY", "END", "GONE", "ON_GONE_KEY", "End", "Fanout", "Gone", "Item"]


class End:
    """Marker: a run finished (after its TurnEnd)."""

    def __repr__(self) -> str:
        return "END"


END = End()


#: Scope key of the list of callbacks the server's HTTP protocol (``_http.py``, httptools) calls
#: once when the connection is lost before the response is complete. A one-shot answer registers
#: one instead of running a task that waits on ``receive()`` for ``http.disconnect`` (issue 16).
#: A list, not a slot: middleware that copies the scope still shares it.
ON_GONE_KEY = "cursorpipe.on_gone"
#: Scope key the same protocol sets once the whole request body is buffered on the connection:
#: ``receive()`` then returns it without waiting, so reading it needs no timeout (issue 16).
BODY_READY_KEY = "cursorpipe.body_ready"


class Gone:
    """Marker: the client disconnected (index ``-1``; see :meth:`Fanout.watch`)."""

    def __repr__(self) -> str:
        return "GONE"


GONE = Gone()
Item = tuple[int, "Event | Exception | End | Gone"]


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Fanout:
    """Consume ``n`` event streams concurrently into one ordered queue of ``(index, item)``.

    Each stream runs in its own task so a silent model never blocks keep-alives, and cancelling
    (:meth:`aclose`) closes every stream, which cancels the upstream Cursor runs (base.py contract).
    The queue is a list and one waiter future, not an ``asyncio.Queue``: there is one reader and
    the queue is unbounded, so the lock-step bookkeeping of a Queue (three deques and a future
    per put or get) is pure cost per event and per open stream (issue 16).
    """

    def __init__(self, streams: list[AsyncGenerator[Event, None]]) -> None:
        # A list read from ``_head`` (and emptied once read through): smaller than a deque's
        # first block for the few items usually waiting, and still O(1) per item for a backlog.
        self._items: list[Item] = []
        self._head = 0
        self._waiter: asyncio.Future[bool] | None = None
        self._watching = False
        self._hooks: list[Callable[[], None]] | None = None
        self._tasks = [asyncio.create_task(self._pump(i, s)) for i, s in enumerate(streams)]
        self.size = len(streams)

    def watch(self, receive: Receive, hooks: list[Callable[[], None]] | None = None) -> None:
        """Queue :data:`GONE` when the client disconnects, so whoever reads the runs learns of it
        in the same wait (issue 16). Told by the connection itself when it offers ``hooks`` (the
        request scope's ``ON_GONE_KEY`` list): no task at all. Else one watcher task per request
        waits on ``receive``, where the ASGI server reports the disconnect at once
        (integrations.md §4.4)."""
        if hooks is not None:
            hooks.append(self._gone)
            self._hooks = hooks
            return
        self._tasks.append(asyncio.create_task(self._watch(receive)))
        self._watching = True

    def _gone(self) -> None:
        self._hooks = None  # the connection dropped its list of callbacks as it called them
        self._put((-1, GONE))

    def _put(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._put((-1, GONE))

    async def _pump(self, index: int, stream: AsyncGenerator[Event, None]) -> None:
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    self._put((index, event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which renders it (never swallowed)
            self._put((index, exc))
            return
        self._put((index, END))

    async def _more(self, wait_s: float | None) -> bool:
        """Wait until an item is queued; False when ``wait_s`` passed first. A plain timer
        callback rather than ``asyncio.timeout``: nothing is cancelled when it fires."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = None if wait_s is None else loop.call_later(wait_s, _expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def ready(self) -> Item | None:
        """The next item if one is already waiting, else ``None`` (never blocks): lets a consumer
        batch what arrived together into one write."""
        return self._take() if self._head < len(self._items) else None

    def _take(self) -> Item:
        item = self._items[self._head]
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        return item

    async def next(self, wait_s: float | None = None) -> Item | None:
        """The next item, or ``None`` when ``wait_s`` passed first (time for a keep-alive)."""
        # No timer to arm and cancel for an item already there (issue 16).
        while self._head == len(self._items):
            if not await self._more(wait_s):
                return None
        return self._take()

    async def prime(self, wait_s: float) -> bool:
        """Wait (at most ``wait_s``) for the first output, so failures that happen before any
        output (auth, unknown model, limits) become real HTTP statuses instead of stream errors.
        Raises that failure; everything read is kept for the consumer. False if the client
        disconnected meanwhile (:meth:`watch`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        seen = self._head
        while True:
            while seen < len(self._items):
                _, value = self._items[seen]
                seen += 1
                if value is GONE:
                    return False
                if isinstance(value, Exception):
                    self._items.clear()
                    self._head = 0
                    raise value
                if not isinstance(value, (TransportInfo, End)):
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._more(remaining):
                return True

    def peek_info(self, index: int = 0) -> TransportInfo | None:
        """The latest ``TransportInfo`` of run ``index`` read so far (a later one names the model
        Cursor routed the turn to)."""
        found: TransportInfo | None = None
        for i, value in self._items[self._head :]:
            if i == index and isinstance(value, TransportInfo):
                found = value
        return found

    async def aclose(self) -> None:
        """Cancel every run still going and wait for them to finish cancelling."""
        if self._hooks is not None:
            self._hooks.remove(self._gone)
            self._hooks = None
        try:
            if self._watching and all(t.done() for t in self._tasks[: self.size]):
                # Every run ended, so the response is (about to be) complete, and the ASGI server
                # then answers the watcher's receive() with a disconnect: one loop step lets it
                # end on its own. Cancelling it instead leaves a cycle (error, traceback, frames)
                # per stream for the cyclic collector (issue 16).
                await asyncio.sleep(0)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
