"""The HTTP layer's defences (issue 12 item 5), as thin subclasses of uvicorn's httptools protocol
(used when installed: several times cheaper per request, issue 16) and h11 protocol: uvicorn
itself times out idle keep-alive connections (``timeout_keep_alive``) and, with h11 only, caps
header size (``h11_max_incomplete_event_size``), but never times out a connection that sends no (or
a slow) request head, and its refusals are plain text. These classes add the header deadline, a
head size cap for httptools, a connection cap
checked at accept time (refused at once with an OpenAI-shaped 503 instead of holding a descriptor),
OpenAI-shaped 400s for malformed requests, and a log filter that collapses floods of identical
warnings (one line per condition per interval, with the count of the ones suppressed)."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import threading
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._fanout import BODY_READY_KEY, ON_GONE_KEY

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of the server extra
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

__all__ = ["LOG_INTERVAL_S", "ThrottleFilter", "auto_max_connections", "hardened_protocol", "raw_error"]

log = logging.getLogger("cursorpipe.server.http")

#: One log line per condition per this many seconds.
LOG_INTERVAL_S = 10.0


def raw_error(status: int, reason: str, message: str, code: str, *, error_type: str) -> bytes:
    """A complete HTTP/1.1 error response in OpenAI's shape that closes the connection (written
    straight to the socket where no request cycle exists to answer through)."""
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-should-retry: {'true' if status >= 500 else 'false'}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def auto_max_connections() -> int:
    """A connection cap that leaves room under the open-file limit for everything else the server
    opens (upstream sockets, agent pipes, logs): a quarter of it, at least 128, kept back."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 65536
    return max(16, soft - max(128, soft // 4))


class ThrottleFilter(logging.Filter):
    """Lets one record per (logger, message template) through per ``interval_s``; the next one
    that passes says how many were suppressed. Meant for the ``asyncio`` and ``uvicorn.error``
    loggers, which otherwise write a line (with traceback) per refused accept or bad request."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.get(key, (-float("inf"), 0))
            if now - last < self.interval_s:
                self._seen[key] = (last, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
        if suppressed:
            record.msg = f"{record.msg} [{suppressed} similar messages suppressed in the last interval]"
        return True


class _CoalescingTransport:
    """The connection's transport as uvicorn sees it: writes made in one event-loop step reach
    the socket as one write at the end of that step. uvicorn writes a response's status line and
    headers and then its body separately, two system calls for every short answer; this makes
    them one (issue 16). Everything but writing and closing is the real transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()  # what was written before closing is sent first, as with the real one
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Defences:
    """What both HTTP protocol classes add to uvicorn's: the connection cap, the header deadline,
    and OpenAI-shaped 400s. The subclass says whether a request head is awaited
    (:meth:`_awaiting_head`)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1024
    max_head_bytes: int = 32 * 1024
    _header_timer: asyncio.TimerHandle | None = None
    # provided by the uvicorn protocol class this is mixed into
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    timeout_keep_alive_task: asyncio.TimerHandle | None

    def _awaiting_head(self) -> bool:
        raise NotImplementedError

    # The uvicorn protocol class comes after this mixin in the MRO, so these extend its methods.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if not self._refused(self.transport):
            self.transport = _CoalescingTransport(self.transport, self.loop)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle.disconnected:  # lost before its response was complete
            callbacks = cycle.scope.get(ON_GONE_KEY)
            while callbacks:
                callbacks.pop()()

    def on_response_complete(self) -> None:
        self._cancel_header_timer()  # idle time from here on is the keep-alive timer's business
        super().on_response_complete()  # type: ignore[misc]

    def _refused(self, transport: asyncio.Transport) -> bool:
        """Over the connection cap: answer 503 at once and close (True), else arm the header
        deadline (False)."""
        if len(self.connections) <= self.max_connections:
            self._arm_header_timer()
            return False
        # Refused connections must not count against the admitted ones (uvicorn's own
        # limit_concurrency check would then answer those in plain text).
        self.connections.discard(self)
        log.warning("connection cap reached (%d open); refusing new connections", self.max_connections)
        transport.write(
            raw_error(
                503,
                "Service Unavailable",
                "cursorpipe-server has too many open connections; retry shortly.",
                "too_many_connections",
                error_type="server_error",
            )
        )
        transport.close()
        return True

    def _after_data(self) -> None:
        if self._awaiting_head() and not self.transport.is_closing():
            self._arm_header_timer()  # (part of) a request head: it must complete in time
        else:
            self._cancel_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self.timeout_keep_alive_task is not None:
            return  # an idle keep-alive connection: uvicorn's own timer closes it
        log.warning("closed a connection that sent no complete request head within the header timeout")
        self.transport.write(
            raw_error(
                408,
                "Request Timeout",
                f"No complete request head within {self.header_timeout_s:g} s.",
                "request_timeout",
                error_type="invalid_request_error",
            )
        )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP gets OpenAI's error shape too (uvicorn answers plain text)."""
        self.transport.write(
            raw_error(400, "Bad Request", msg, "invalid_http_request", error_type="invalid_request_error")
        )
        self.transport.close()


class _HardenedH11Protocol(_Defences, H11Protocol):
    """uvicorn's h11 protocol with the defences (h11 itself caps the head size)."""

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_data()


class _HardenedHttpToolsProtocol(_Defences, HttpToolsProtocol):
    """uvicorn's httptools protocol (several times cheaper per request than h11, issue 16) with
    the defences. httptools buffers a header until it is complete, so the head size is capped
    here by counting the bytes that arrive while a head is awaited."""

    _head_pending = True
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ON_GONE_KEY] = []  # type: ignore[literal-required]

    def _awaiting_head(self) -> bool:
        # The head of the next request is awaited only once the last response is complete: a
        # response that takes longer than the header deadline (a long stream) must not be cut
        # with a 408 because the request's body has been read (``_head_pending`` is set again
        # then, for counting a pipelined head's bytes).
        if not self._head_pending:
            return False
        cycle = getattr(self, "cycle", None)
        return cycle is None or bool(getattr(cycle, "response_complete", True))

    def data_received(self, data: bytes) -> None:
        if self._head_pending:
            self._head_bytes += len(data)
        super().data_received(data)  # may complete the head (on_headers_complete)
        if self._head_pending and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            log.warning("refused a request head over %d bytes", self.max_head_bytes)
            self.send_400_response("Request head too large.")
            return
        self._after_data()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True  # what follows on this connection is the next request's head
        self.scope[BODY_READY_KEY] = True  # type: ignore[literal-required]


def hardened_protocol(
    *, header_timeout_s: float, max_connections: int, max_head_bytes: int = 32 * 1024, httptools: bool = True
) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits: httptools when it is
    installed (the ``server`` extra brings it) and ``httptools`` is true, else h11."""
    base: type[_Defences] = _HardenedH11Protocol
    if httptools and HttpToolsProtocol is not None:
        base = _HardenedHttpToolsProtocol
    attrs = {
        "header_timeout_s": header_timeout_s,
        "max_connections": max_connections,
        "max_head_bytes": max_head_bytes,
    }
    return type("CursorPipeHTTPProtocol", (base,), attrs)
