"""Server-sent events: the one frame encoder every wire format uses, and the streaming response
that stops the moment the client goes away (which cancels the Cursor run, integrations.md §4.4).

Why not sse-starlette's ``EventSourceResponse``: it pings from a timer task of its own in a fixed
comment format and runs each response in an anyio task group, one more task and a lock per stream
on the hot path. Here keep-alives come from the turn loop's own wait for the next event (no extra
task) in each format's own shape (an SSE comment for OpenAI, a named ``ping`` event for
Anthropic's), and the drain farewell is a frame of the stream's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._errors import APIError
from ._gate import stream_shutdown_error

__all__ = [
    "KEEPALIVE",
    "EventStreamResponse",
    "Last",
    "StreamEnding",
    "frame",
]

log = logging.getLogger("cursorpipe.server")
T = TypeVar("T")

#: An SSE comment: ignored by clients, keeps proxies and idle timers from closing the stream.
KEEPALIVE = b": keep-alive\n\n"


class StreamEnding:
    """Ends every open stream at once when the drain time is up, without a task per stream
    waiting for it: each open stream registers a callback."""

    def __init__(self) -> None:
        self._ended = False
        self._open: set[Callable[[], None]] = set()

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._ended

    def set(self) -> None:
        """End every open stream (and any opened from now on)."""
        self._ended = True
        for end in list(self._open):
            end()

    def register(self, end: Callable[[], None]) -> None:
        """Call ``end`` when streams end (at once if they already have)."""
        self._open.add(end)
        if self._ended:
            end()

    def discard(self, end: Callable[[], None]) -> None:
        """The stream closed: forget its callback."""
        self._open.discard(end)


class Last(bytes):
    """The final bytes of a stream: sent with the end of the body in one write instead of an
    empty write of its own after it (issue 16)."""


def frame(data: bytes, event: bytes | None = None) -> bytes:
    """One server-sent event carrying ``data`` (already-encoded JSON, one line), optionally named
    ``event``."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


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
        ending: StreamEnding | None = None,
        farewell: Callable[[APIError], bytes] | None = None,
        watch: bool = True,
    ) -> None:
        self._body = body
        self._on_close = on_close
        self._ending = ending
        self._farewell = farewell
        #: False when the body itself ends as soon as the client disconnects (the turn loop's
        #: fanout watches for it), so no watcher of our own is needed.
        self._watch = watch
        self.status_code = 200
        self.background = None
        base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        base.update(headers or {})
        self.init_headers(base)

    async def _write(self, send: Send, started: list[bool]) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        started.append(True)
        async for chunk in self._body:
            last = type(chunk) is Last
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started: list[bool] = []
        if not self._watch:
            await self._write_inline(send, started)
            return
        writer = asyncio.ensure_future(self._write(send, started))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        tasks = (writer, watcher)
        cut_short = False

        def end_now() -> None:
            nonlocal cut_short
            if not writer.done() and not watcher.done():
                cut_short = True
                writer.cancel()

        if self._ending is not None:
            self._ending.register(end_now)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not writer.done():
                log.info("client disconnected mid-stream; cancelling the run")
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if cut_short and started:
                await self._say_farewell(send)
        finally:
            if self._ending is not None:
                self._ending.discard(end_now)
            pending = [t for t in tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                # This task itself was cancelled: the writer must stop before its body generator
                # can be closed (closing a running generator raises).
                await asyncio.gather(*pending, return_exceptions=True)
            await self._close()

    async def _write_inline(self, send: Send, started: list[bool]) -> None:
        """Write in this task (the body itself ends when the client goes away): no writer task,
        one loop hop less before the first token (issue 16). The drain cancels this task; that
        one cancellation is taken back and answered with the farewell."""
        task = asyncio.current_task()
        assert task is not None
        writing = True
        cut_short = False

        def end_now() -> None:
            nonlocal cut_short
            if writing and not cut_short:
                cut_short = True
                task.cancel()

        if self._ending is not None:
            self._ending.register(end_now)
        try:
            try:
                await self._write(send, started)
            except asyncio.CancelledError:
                # Ours, unless someone else cancelled too (then that one stands).
                if not cut_short or task.uncancel() > 0:
                    raise
            finally:
                writing = False
                if self._ending is not None:
                    self._ending.discard(end_now)
            if cut_short and started:
                await self._say_farewell(send)
        finally:
            await self._close()

    async def _say_farewell(self, send: Send) -> None:
        if self._farewell is None:
            return
        # The server is shutting down with this stream still open: say so in the stream's own
        # format and end it properly rather than cutting the connection.
        log.warning("drain timeout: ending an open stream with an error event")
        farewell = self._farewell(stream_shutdown_error())
        await send({"type": "http.response.body", "body": farewell, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close(self) -> None:
        await self._body.aclose()
        if self._on_close is not None:
            await self._on_close()
