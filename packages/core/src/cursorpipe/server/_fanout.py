"""Parallel runs of one request (``n`` > 1 choices) merged into one ordered queue, with the
timeout the turn loop needs for keep-alives (integrations.md §4.4)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.types import Receive

from ..types import Event, TransportInfo

__all__ = ["END", "GONE", "End", "Fanout", "Gone", "Item"]


class End:
    """Marker: a run finished (after its TurnEnd)."""

    def __repr__(self) -> str:
        return "END"


END = End()


class Gone:
    """Marker: the client disconnected (index ``-1``; see :meth:`Fanout.watch`)."""

    def __repr__(self) -> str:
        return "GONE"


GONE = Gone()
Item = tuple[int, "Event | Exception | End | Gone"]


class Fanout:
    """Consume ``n`` event streams concurrently into one ordered queue of ``(index, item)``.

    Each stream runs in its own task so a silent model never blocks keep-alives, and cancelling
    (:meth:`aclose`) closes every stream, which cancels the upstream Cursor runs (base.py contract).
    """

    def __init__(self, streams: list[AsyncGenerator[Event, None]]) -> None:
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._buffer: deque[Item] = deque()
        self._tasks = [asyncio.create_task(self._pump(i, s)) for i, s in enumerate(streams)]
        self.size = len(streams)

    def watch(self, receive: Receive) -> None:
        """Queue :data:`GONE` when the client disconnects, so whoever reads the runs learns of it
        in the same wait: one watcher per request instead of a task wrapping each wait (issue 16).
        The ASGI server reports the disconnect on ``receive`` at once (integrations.md §4.4)."""
        self._tasks.append(asyncio.create_task(self._watch(receive)))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        await self._queue.put((-1, GONE))

    async def _pump(self, index: int, stream: AsyncGenerator[Event, None]) -> None:
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    await self._queue.put((index, event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which renders it (never swallowed)
            await self._queue.put((index, exc))
            return
        await self._queue.put((index, END))

    def ready(self) -> Item | None:
        """The next item if one is already waiting, else ``None`` (never blocks): lets a consumer
        batch what arrived together into one write."""
        if self._buffer:
            return self._buffer.popleft()
        if self._queue.empty():
            return None
        return self._queue.get_nowait()

    async def next(self, wait_s: float | None = None) -> Item | None:
        """The next item, or ``None`` when ``wait_s`` passed first (time for a keep-alive)."""
        item = self.ready()
        if item is not None:
            return item  # no timer to arm and cancel for an item already there (issue 16)
        if wait_s is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout(wait_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def prime(self, wait_s: float) -> bool:
        """Wait (at most ``wait_s``) for the first output, so failures that happen before any
        output (auth, unknown model, limits) become real HTTP statuses instead of stream errors.
        Raises that failure; everything read is kept for the consumer. False if the client
        disconnected meanwhile (:meth:`watch`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            try:
                async with asyncio.timeout(remaining):
                    item = await self._queue.get()  # not next(): that would re-read the buffer
            except TimeoutError:
                return True
            _, value = item
            if value is GONE:
                return False
            self._buffer.append(item)
            if isinstance(value, Exception):
                self._buffer.clear()
                raise value
            if not isinstance(value, (TransportInfo, End)):
                return True

    def peek_info(self, index: int = 0) -> TransportInfo | None:
        """The latest ``TransportInfo`` of run ``index`` read so far (a later one names the model
        Cursor routed the turn to)."""
        found: TransportInfo | None = None
        for i, value in self._buffer:
            if i == index and isinstance(value, TransportInfo):
                found = value
        return found

    async def aclose(self) -> None:
        """Cancel every run still going and wait for them to finish cancelling."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
