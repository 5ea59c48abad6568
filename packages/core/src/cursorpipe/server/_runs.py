"""Running turns for HTTP requests: parallel runs merged into one queue (``n`` > 1), keep-alive
timing, a response class that cancels the Cursor run as soon as the client disconnects, and the
concurrency gate that answers 429/503 instead of queueing forever (integrations.md §4.4, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._constants import SERVER_BUSY_RETRY_AFTER_S
from ..types import Event, TransportInfo
from ._errors import APIError

__all__ = ["END", "End", "EventStreamResponse", "Fanout", "Gate", "run_until_disconnect"]

log = logging.getLogger("cursorpipe.server")
T = TypeVar("T")


class End:
    """Marker: a run finished (after its TurnEnd)."""

    def __repr__(self) -> str:
        return "END"


END = End()
Item = tuple[int, "Event | Exception | End"]


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

    async def next(self, wait_s: float | None = None) -> Item | None:
        """The next item, or ``None`` when ``wait_s`` passed first (time for a keep-alive)."""
        if self._buffer:
            return self._buffer.popleft()
        if wait_s is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout(wait_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def prime(self, wait_s: float) -> None:
        """Wait (at most ``wait_s``) for the first output, so failures that happen before any
        output (auth, unknown model, limits) become real HTTP statuses instead of stream errors.
        Raises that failure; everything read is kept for the consumer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    item = await self._queue.get()  # not next(): that would re-read the buffer
            except TimeoutError:
                return
            self._buffer.append(item)
            _, value = item
            if isinstance(value, Exception):
                self._buffer.clear()
                raise value
            if not isinstance(value, (TransportInfo, End)):
                return

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


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; if the client disconnects first, cancel it (and with it the Cursor run) and
    return ``None``.

    Like vLLM's ``with_cancellation`` (integrations.md §4.4): the ASGI server reports the
    disconnect on ``receive`` at once, so the run is cancelled well within a second.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
    if task.cancelled():
        log.info("client disconnected; cancelled the run")
        return None
    return task.result()


class EventStreamResponse(Response):
    """``text/event-stream`` whose body generator is cancelled the moment the client goes away.

    Starlette's StreamingResponse only notices a disconnect on its next write with ASGI spec 2.4,
    which never comes while the model is silent; this one always watches ``receive``.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        ending: asyncio.Event | None = None,
        farewell: Callable[[APIError], bytes] | None = None,
    ) -> None:
        self._body = body
        self._on_close = on_close
        self._ending = ending
        self._farewell = farewell
        self.status_code = 200
        self.background = None
        base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        base.update(headers or {})
        self.init_headers(base)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def stream() -> None:
            nonlocal started
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            started = True
            async for chunk in self._body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        writer = asyncio.ensure_future(stream())
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        ending = asyncio.ensure_future(self._ending.wait()) if self._ending is not None else None
        tasks = [t for t in (writer, watcher, ending) if t is not None]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            cut_short = ending is not None and ending.done() and not writer.done() and not watcher.done()
            if watcher.done() and not writer.done():
                log.info("client disconnected mid-stream; cancelling the run")
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if cut_short and started and self._farewell is not None:
                # The server is shutting down with this stream still open: say so in the
                # stream's own format and end it properly rather than cutting the connection.
                log.warning("drain timeout: ending an open stream with an error event")
                farewell = self._farewell(stream_shutdown_error())
                await send({"type": "http.response.body", "body": farewell, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            pending = [t for t in tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                # This task itself was cancelled: the writer must stop before its body generator
                # can be closed (closing a running generator raises).
                await asyncio.gather(*pending, return_exceptions=True)
            await self._body.aclose()
            if self._on_close is not None:
                await self._on_close()


def sse(data: str) -> bytes:
    """One server-sent event carrying ``data``."""
    return f"data: {data}\n\n".encode()


def keepalive() -> bytes:
    """An SSE comment: ignored by clients, keeps proxies and idle timers from closing the stream."""
    return b": keep-alive\n\n"


class Gate:
    """At most ``limit`` upstream runs at once (a request with ``n`` choices takes ``n`` slots);
    others wait, first come first served, up to ``queue_timeout_s`` and then get 429 with
    Retry-After. While draining every new request gets 503 with Retry-After."""

    def __init__(self, limit: int, queue_timeout_s: float) -> None:
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self.in_use = 0
        self.draining = False
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _busy(self) -> APIError:
        return APIError(
            429,
            f"cursorpipe-server is busy: {self.limit} runs are already going "
            f"(CURSORPIPE_MAX_CONCURRENCY) and no slot freed up within {self.queue_timeout_s:g} s. "
            "Retry shortly.",
            type="rate_limit_error",
            code="server_busy",
            retry_after=SERVER_BUSY_RETRY_AFTER_S,
            should_retry=True,
        )

    async def acquire(self, weight: int = 1) -> None:
        """Take ``weight`` slots or raise the 400/429/503 :class:`APIError`."""
        if self.draining:
            raise draining_error()
        if weight > self.limit:
            raise APIError(
                400,
                f"n={weight} needs {weight} parallel runs but this server runs at most {self.limit} "
                "(CURSORPIPE_MAX_CONCURRENCY).",
                param="n",
                code="invalid_value",
                should_retry=False,
            )
        if not self._waiters and self.in_use + weight <= self.limit:
            self.in_use += weight
            return
        if self.queue_timeout_s <= 0:
            raise self._busy()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.release(weight)  # granted in the same instant the wait ended: give it back
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            self._grant()

    def release(self, weight: int = 1) -> None:
        """Give ``weight`` slots back."""
        self.in_use -= weight
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            weight, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()
                continue
            if self.in_use + weight > self.limit:
                return  # strict order: a big request is not starved by small ones behind it
            self._waiters.popleft()
            self.in_use += weight
            granted.set_result(None)


def stream_shutdown_error() -> APIError:
    """Ends a stream still open when the drain time is up."""
    return APIError(
        503,
        "cursorpipe-server shut down before this answer was complete; retry the request.",
        type="server_error",
        code="shutting_down",
        should_retry=True,
    )


def draining_error() -> APIError:
    """503 while the server shuts down (clients retry against another instance or later)."""
    return APIError(
        503,
        "cursorpipe-server is shutting down and takes no new requests.",
        type="server_error",
        code="shutting_down",
        retry_after=SERVER_BUSY_RETRY_AFTER_S,
        should_retry=True,
    )
