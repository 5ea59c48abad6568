"""The HTTP/1.1-compatible half-duplex pair: ``AgentService/RunSSE`` reads, ``BidiService/BidiAppend``
writes (connect.md §5.7). Works over httpx on HTTP/1.1, and multiplexed on HTTP/2 when the httpx
client negotiated it (https + ALPN).

Procedure (§5.7, official-sdk-as-peer.md §2): one request id binds both halves (same value in
``x-request-id`` on RunSSE and on every append, which carry the identical header set); RunSSE's
body is one envelope holding ``BidiRequestId``; each client message is one unary
``BidiAppendRequest{data: lowercase hex, request_id, append_seqno}`` with seqno 0 for the run
request; appends are fired in order without waiting, at most 16 in flight (the server reorders by
seqno); append #0 is not held back until RunSSE's headers arrive; any append error aborts the
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing

import httpx

from ..._codecs.connect import encode_envelope, parse_unary_error
from ..._constants import APPEND_TIMEOUT_BASE_S, APPEND_TIMEOUT_PER_128K_S, MAX_INFLIGHT_APPENDS
from ..._net import network_errors
from ..._proto.agent.v1 import agent_pb2 as pb
from ..._proto.aiserver.v1 import aiserver_pb2 as ai
from ...errors import CursorPipeError, StreamDroppedError
from ._channel import ConnectCallError, decode_server_messages

__all__ = ["APPEND_PATH", "RUNSSE_PATH", "Http1Channel", "append_timeout_s"]

RUNSSE_PATH = "/agent.v1.AgentService/RunSSE"
APPEND_PATH = "/aiserver.v1.BidiService/BidiAppend"

_EOF = object()


def append_timeout_s(payload_len: int) -> float:
    """§5.7: 60 s + 1 s per 128 KiB of encoded payload."""
    return APPEND_TIMEOUT_BASE_S + APPEND_TIMEOUT_PER_128K_S * (payload_len // (128 * 1024))


class Http1Channel:
    """RunSSE + BidiAppend for one attempt of one turn."""

    kind = "runsse"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        headers: Mapping[str, str],
        request_id: str,
        *,
        max_inflight: int = MAX_INFLIGHT_APPENDS,
        token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._headers["x-request-id"] = request_id
        # Every append carries the same header set: normalised by httpx once here, copied per
        # append (a copy of an httpx.Headers skips the per-header normalisation, about 30 us
        # per request, issue 16).
        self._append_headers = httpx.Headers({**self._headers, "content-type": "application/proto"})
        self._request_id = request_id
        self._seq = 0
        self._slots = asyncio.Semaphore(max_inflight)
        self._appends: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._response: httpx.Response | None = None
        self._closed = False
        self.sent: list[int] = []
        """Seqnos dispatched (diagnostics and tests)."""

    # -- write half --------------------------------------------------------------------------
    async def start(self, first: pb.AgentClientMessage) -> None:
        """Start RunSSE and append #0 concurrently (§5.7 step 4)."""
        self._pump = asyncio.create_task(self._read(), name=f"cursorpipe-runsse-{self._request_id[:8]}")
        await self.send(first)

    async def send(self, message: pb.AgentClientMessage) -> None:
        """Fire one BidiAppend (waits only for a free in-flight slot)."""
        if self._closed:
            return
        data = message.SerializeToString()
        seq = self._seq
        self._seq += 1
        await self._slots.acquire()
        task = asyncio.create_task(self._append(seq, data), name=f"cursorpipe-append-{seq}")
        self._appends.add(task)
        task.add_done_callback(self._appends.discard)
        self.sent.append(seq)

    async def send_many(self, messages: Sequence[pb.AgentClientMessage]) -> None:
        """One BidiAppend per message, in order (each append is its own request, §5.7)."""
        for message in messages:
            await self.send(message)

    async def _append(self, seq: int, data: bytes) -> None:
        try:
            body = ai.BidiAppendRequest(
                data=data.hex(), request_id=ai.BidiRequestId(request_id=self._request_id), append_seqno=seq
            ).SerializeToString()
            timeout = append_timeout_s(len(body))
            headers = self._append_headers.copy()
            headers["connect-timeout-ms"] = str(int(timeout * 1000))
            if self._token is not None:
                # Like the SDK's auth interceptor, every call carries the current token, so a
                # refresh during a long turn (connect.md §2.3) reaches the appends too.
                headers["authorization"] = f"Bearer {await self._token()}"
            with network_errors(
                f"BidiAppend seqno={seq} failed: {{exc}}",
                timeout_message=(
                    f"bidi_append_deadline_exceeded: append seqno={seq} got no answer within {timeout:g} s"
                ),
            ):
                response = await self._http.post(
                    self._base + APPEND_PATH, content=body, headers=headers, timeout=timeout
                )
            if response.status_code != 200:
                raise ConnectCallError(
                    parse_unary_error(
                        response.status_code, response.content, response.headers.get("content-type", "")
                    ),
                    status=response.status_code,
                    headers=response.headers,
                )
        except (CursorPipeError, ConnectCallError) as exc:
            # §5.7 step 5: any append error aborts the whole stream.
            self._queue.put_nowait(exc)
        finally:
            self._slots.release()

    # -- read half ---------------------------------------------------------------------------
    async def _read(self) -> None:
        headers = dict(self._headers)
        headers["content-type"] = "application/connect+proto"
        body = encode_envelope(ai.BidiRequestId(request_id=self._request_id).SerializeToString())
        request = self._http.build_request("POST", self._base + RUNSSE_PATH, content=body, headers=headers)
        try:
            with network_errors("Could not open the RunSSE stream ({exc}); check the network."):
                response = await self._http.send(request, stream=True)
            self._response = response
            # After the headers a network failure is a stream that broke mid-turn.
            with network_errors(
                "The RunSSE stream broke mid-turn ({exc}).", error=StreamDroppedError, code="stream_dropped"
            ):
                if response.status_code != 200:
                    raw = await response.aread()
                    raise ConnectCallError(
                        parse_unary_error(
                            response.status_code, raw, response.headers.get("content-type", "")
                        ),
                        status=response.status_code,
                        headers=response.headers,
                    )
                chunks = response.aiter_bytes()
                async with aclosing(decode_server_messages(chunks, response.headers)) as decoded:
                    async for msg in decoded:
                        self._queue.put_nowait(msg)
                self._queue.put_nowait(_EOF)
                # Nothing follows the end-stream envelope (connect.md §3.1), so the body ends
                # with it: reading on to that end hands the connection back to the pool (else
                # every turn opens a new one) and lets httpx's stream generators finish rather
                # than be closed by the garbage collector through the loop's thread-safe wake-up
                # (issue 16). The caller already has its EOF; aclose() cancels this read.
                async for _ in chunks:
                    pass
        except (CursorPipeError, ConnectCallError) as exc:
            self._queue.put_nowait(exc)

    async def messages(self) -> AsyncGenerator[pb.AgentServerMessage, None]:
        """Server messages in order; raises the first failure of either half."""
        while True:
            item = await self._queue.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pb.AgentServerMessage)
            yield item

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the server to finish the RunSSE response, discarding what is left."""
        if self._pump is None or self._pump.done():
            return
        # asyncio.wait neither cancels the pump on timeout nor raises its outcome, so a pump that
        # ended cancelled is no error here while a cancel aimed at the caller still propagates.
        await asyncio.wait({self._pump}, timeout=timeout_s)

    async def abort(self) -> None:
        """Drop the RunSSE response and every in-flight append now, like the SDK's
        ``run.cancel()`` (live-dialect.md row 11)."""
        await self.aclose(flush_s=0.0)

    async def aclose(self, *, flush_s: float = 1.0) -> None:
        """Let in-flight appends (e.g. a cancel action) land briefly, then tear everything down."""
        if self._closed:
            return
        self._closed = True
        pending = set(self._appends)
        if pending and flush_s > 0:
            with contextlib.suppress(Exception):
                await asyncio.wait(pending, timeout=flush_s)
        for task in list(self._appends):
            task.cancel()
        if self._pump is not None:
            self._pump.cancel()
        tasks = [t for t in (*self._appends, self._pump) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._response is not None:
            with contextlib.suppress(Exception):
                await self._response.aclose()
