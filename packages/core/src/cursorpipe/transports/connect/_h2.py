"""Full-duplex ``AgentService/Run`` over HTTP/2 with the ``h2`` library (connect.md §3.5, §5.6).

httpx cannot do full duplex (httpcore sends the whole request body before reading the response),
and ``Run`` needs KV/exec answers mid-stream with the request side kept open until ``turn_ended``.
So: our own asyncio socket, h2c with prior knowledge for ``http://`` and TLS with ALPN ``h2`` for
``https://``; one connection per transport, many concurrent turns multiplexed as streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx

from ..._codecs.connect import encode_envelope, parse_unary_error
from ..._net import network_errors
from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import CursorPipeError, NetworkError, StreamDroppedError
from ._channel import ConnectCallError, decode_server_messages

__all__ = ["RUN_PATH", "H2Channel", "H2Connection"]

RUN_PATH = "/agent.v1.AgentService/Run"
_EOF = object()
# A generous receive window: model output is small, but a checkpoint or a gzip frame may be large.
_WINDOW = 16 * 1024 * 1024


class _Stream:
    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.headers: dict[str, str] = {}
        self.headers_ready = asyncio.Event()
        self.data: asyncio.Queue[object] = asyncio.Queue()
        self.window = asyncio.Event()
        self.done = asyncio.Event()
        self.ended = False
        self.closed_local = False


class H2Connection:
    """One HTTP/2 connection (h2c or TLS+ALPN) with a reader task dispatching to streams."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self._connect_timeout = connect_timeout_s
        self._conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._streams: dict[int, _Stream] = {}
        self._dead: CursorPipeError | None = None
        self.streams_opened = 0

    @property
    def alive(self) -> bool:
        """Whether new streams can be opened on this connection."""
        return self._writer is not None and self._dead is None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the socket and exchange the HTTP/2 preface."""
        context: ssl.SSLContext | None = None
        if self.scheme == "https":
            # The same trust store as the httpx half (certifi, or SSL_CERT_FILE/SSL_CERT_DIR).
            context = httpx.create_ssl_context()
            context.set_alpn_protocols(["h2"])
        with network_errors(f"Could not connect to {self.authority} for HTTP/2 ({{exc}})."):
            async with asyncio.timeout(self._connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, ssl=context, server_hostname=self.host if context else None
                )
        if context is not None:
            sslobj = self._writer.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                self._writer.close()
                raise NetworkError(f"{self.authority} did not negotiate HTTP/2 (ALPN).", code="no_http2")
        self._conn.initiate_connection()
        self._conn.increment_flow_control_window(_WINDOW)
        self._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
        await self._flush()
        self._task = asyncio.create_task(self._read_loop(), name=f"cursorpipe-h2-{self.authority}")

    # Writing: every change to the h2 state machine is followed, in the same synchronous step, by
    # handing its bytes to the transport (_write), so frames leave in order without a lock. Only the
    # backpressure wait (drain) suspends, and the reader never waits for it: a reader blocked
    # behind a writer's drain is the classic HTTP/2 deadlock.
    def _write(self) -> None:
        data = self._conn.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)

    async def _flush(self) -> None:
        self._write()
        if self._writer is not None:
            await self._writer.drain()

    async def open(self, path: str, headers: Mapping[str, str], *, flush: bool = True) -> _Stream:
        """Send request headers (no END_STREAM) and return the new stream. With ``flush=False``
        the headers wait in the h2 buffer for the next write (the run request follows at once:
        one socket write instead of two, issue 16)."""
        if not self.alive:
            raise self._dead or NetworkError("The HTTP/2 connection is closed.", code="unavailable")
        sid = self._conn.get_next_available_stream_id()
        stream = _Stream(sid)
        self._streams[sid] = stream
        pseudo = [
            (":method", "POST"),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
        ]
        self._conn.send_headers(sid, pseudo + [(k.lower(), v) for k, v in headers.items()])
        self.streams_opened += 1
        if flush:
            await self._flush_guarded()
        return stream

    async def _flush_guarded(self) -> None:
        try:
            await self._flush()
        except (OSError, ConnectionError) as exc:
            self._fail(NetworkError(f"HTTP/2 write failed ({type(exc).__name__}).", code="unavailable"))
            raise StreamDroppedError("The HTTP/2 connection broke while sending.") from exc

    async def send(
        self, stream: _Stream, data: bytes, *, end_stream: bool = False, flush: bool = True
    ) -> None:
        """Send ``data`` on ``stream``, honouring flow control. With ``flush=False`` the frames wait
        in the h2 buffer for the next write (several messages leave in one socket write)."""
        view = memoryview(data)
        while True:
            if self._dead is not None:
                raise StreamDroppedError("The HTTP/2 connection is gone.") from self._dead
            if stream.ended and stream.closed_local:
                return
            try:
                window = min(
                    self._conn.local_flow_control_window(stream.id), self._conn.max_outbound_frame_size
                )
            except (h2.exceptions.StreamClosedError, KeyError):
                return  # the server already finished the stream; nothing left to say
            if window > 0 or (not view and end_stream):
                chunk = view[:window]
                last = len(chunk) == len(view)
                try:
                    self._conn.send_data(stream.id, bytes(chunk), end_stream=end_stream and last)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return
                if end_stream and last:
                    stream.closed_local = True
                view = view[len(chunk) :]
                if flush or view:
                    await self._flush_guarded()
                if not view:
                    return
                continue
            await self._flush_guarded()  # what is buffered leaves before we wait for the window
            stream.window.clear()
            await stream.window.wait()

    async def reset(self, stream: _Stream) -> None:
        """RST_STREAM(CANCEL) unless the stream is already done; never raises."""
        self._streams.pop(stream.id, None)
        if self._dead is not None:
            return
        with contextlib.suppress(Exception):
            self._conn.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
        with contextlib.suppress(Exception):
            await self._flush()

    def release(self, stream: _Stream) -> None:
        """Forget a finished stream."""
        self._streams.pop(stream.id, None)

    def _fail(self, error: CursorPipeError) -> None:
        if self._dead is None:
            self._dead = error
        for stream in self._streams.values():
            if not stream.ended:
                stream.data.put_nowait(StreamDroppedError(f"The HTTP/2 connection ended mid-turn: {error}"))
                stream.ended = True
                stream.done.set()
            stream.headers_ready.set()
            stream.window.set()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    self._fail(NetworkError("The server closed the HTTP/2 connection.", code="unavailable"))
                    return
                try:
                    events = self._conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self._fail(NetworkError(f"HTTP/2 protocol error: {exc}", code="protocol_error"))
                    return
                for event in events:
                    self._dispatch(event)
                self._write()  # acks, settings, window updates: never wait on drain here
        except (OSError, ConnectionError) as exc:
            self._fail(NetworkError(f"HTTP/2 read failed ({type(exc).__name__}).", code="unavailable"))

    def _dispatch(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self._streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = {str(k): str(v) for k, v in event.headers}
            stream.headers_ready.set()
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                with contextlib.suppress(Exception):
                    self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None and event.data:
                stream.data.put_nowait(bytes(event.data))
        elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
            for k, v in event.headers:
                stream.headers.setdefault(str(k), str(v))
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
            stream.done.set()
            stream.headers_ready.set()
            stream.data.put_nowait(_EOF)
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.ended = True
            stream.done.set()
            stream.headers_ready.set()
            stream.data.put_nowait(
                StreamDroppedError(f"The server reset the HTTP/2 stream (error code {event.error_code}).")
            )
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self._streams.values() if not event.stream_id else [stream] if stream else []
            for s in targets:
                s.window.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for s in self._streams.values():
                s.window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._fail(NetworkError("The server sent GOAWAY.", code="unavailable"))

    async def aclose(self) -> None:
        """Close the socket and stop the reader. Idempotent; never raises."""
        if self._dead is None:
            self._dead = NetworkError("The HTTP/2 connection was closed.", code="closed")
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                self._conn.close_connection()
                writer.write(self._conn.data_to_send())
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
        if self._task is not None:
            self._task.cancel()
            # gather: the reader's own CancelledError is a result; a cancel aimed at us propagates.
            await asyncio.gather(self._task, return_exceptions=True)
        for stream in self._streams.values():
            if not stream.ended:
                stream.data.put_nowait(StreamDroppedError("The HTTP/2 connection was closed."))
                stream.ended = True
                stream.done.set()
        self._streams.clear()


class H2Channel:
    """One ``Run`` call: a request stream of envelopes, a response stream of envelopes (§5.6)."""

    kind = "run"

    def __init__(self, conn: H2Connection, headers: Mapping[str, str]) -> None:
        self._conn = conn
        self._headers = dict(headers)
        self._headers["content-type"] = "application/connect+proto"
        self._stream: _Stream | None = None
        self._closed = False
        # The server's Connect end-of-stream envelope was read: its answer is complete even while
        # its HTTP/2 END_STREAM is still in flight (often the next packet).
        self._answered = False

    async def start(self, first: pb.AgentClientMessage) -> None:
        """Open the stream and send the run request; the request side stays open (§5.6). Headers
        and run request leave in one socket write."""
        self._stream = await self._conn.open(RUN_PATH, self._headers, flush=False)
        await self.send(first)

    async def send(self, message: pb.AgentClientMessage) -> None:
        """Send one enveloped client message."""
        if self._stream is None or self._closed:
            return
        await self._conn.send(self._stream, encode_envelope(message.SerializeToString()))

    async def send_many(self, messages: Sequence[pb.AgentClientMessage]) -> None:
        """Send several messages, each in its own DATA frame as :meth:`send` would, in one socket
        write (the replies to one server message, issue 16)."""
        if self._stream is None or self._closed:
            return
        last = len(messages) - 1
        for i, message in enumerate(messages):
            data = encode_envelope(message.SerializeToString())
            await self._conn.send(self._stream, data, flush=i == last)

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        assert self._stream is not None
        while True:
            item = await self._stream.data.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def messages(self) -> AsyncGenerator[pb.AgentServerMessage, None]:
        """Server messages; raises on a non-200 status, an end-stream error or a dropped stream."""
        assert self._stream is not None
        stream = self._stream
        await stream.headers_ready.wait()
        status = int(stream.headers.get(":status", "0") or 0)
        if status != 200:
            body = b"".join([c async for c in self._chunks()])
            raise ConnectCallError(
                parse_unary_error(status, body, stream.headers.get("content-type", "")),
                status=status,
                headers=stream.headers,
            )
        # Both generators closed here: the decoder returns at the end-stream envelope with the
        # chunk reader still suspended, and a generator left to the garbage collector is closed
        # through the loop's thread-safe wake-up (one self-pipe write per turn, issue 16).
        async with (
            aclosing(self._chunks()) as chunks,
            aclosing(decode_server_messages(chunks, stream.headers)) as decoded,
        ):
            async for msg in decoded:
                yield msg
        self._answered = True

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the server to end the stream after a cancel (connect.md §6.4)."""
        if self._stream is None or self._stream.ended:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._stream.done.wait()

    async def abort(self) -> None:
        """RST_STREAM(CANCEL) now, like the SDK's ``run.cancel()`` (live-dialect.md row 11)."""
        if self._closed or self._stream is None:
            self._closed = True
            return
        self._closed = True
        await self._conn.reset(self._stream)

    async def aclose(self, *, flush_s: float = 1.0) -> None:
        """Half-close politely when the server has finished, else RST_STREAM(CANCEL).

        "Finished" includes a read end-of-stream envelope whose HTTP/2 END_STREAM has not arrived
        yet: a RST_STREAM there would cancel a call that succeeded, and h2 would answer the
        server's late END_STREAM with a second RST_STREAM (two writes per turn instead of one,
        issue 16)."""
        if self._closed or self._stream is None:
            self._closed = True
            return
        self._closed = True
        stream = self._stream
        if stream.ended or self._answered:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(flush_s):
                    await self._conn.send(stream, b"", end_stream=True)
            self._conn.release(stream)
        else:
            await self._conn.reset(stream)
