"""Reading request bodies under limits (issue 12 item 4): the size is enforced while reading (413
before the whole body is in memory), a body that trickles in is cut off (408), and a large body is
parsed in a worker thread so ``/health`` and running streams keep being served meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive

from ._errors import APIError, ClientGone
from ._fanout import BODY_READY_KEY
from ._requests import parse_json_object

__all__ = [
    "OFFLOAD_BYTES",
    "OFFLOAD_MESSAGES",
    "BodyTooLarge",
    "header",
    "offload_if",
    "parse_body",
    "read_body",
]

T = TypeVar("T")

#: Bodies at least this large are parsed and validated off the event loop.
OFFLOAD_BYTES = 256 * 1024
#: Conversations at least this long are turned into a turn request off the event loop.
OFFLOAD_MESSAGES = 2_000


class BodyTooLarge(APIError):
    """413 in OpenAI's shape; repeating the same request cannot help."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"The request body is larger than this server accepts ({limit} bytes, "
            "CURSORPIPE_MAX_BODY_BYTES).",
            code="request_too_large",
            should_retry=False,
        )


def header(request: Request, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case, as ASGI delivers names), read from
    the scope: Starlette's ``request.headers.get`` builds a mapping and raises and catches a
    ``KeyError`` for every absent header, on the hot path of every generation request (issue 16)."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(request: Request, *, limit: int, timeout_s: float) -> bytes:
    """The body, read chunk by chunk: over ``limit`` bytes gives :class:`BodyTooLarge` as soon as
    it is known (from ``Content-Length`` or while reading), slower than ``timeout_s`` a 408."""
    declared = header(request, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    if request.scope.get(BODY_READY_KEY):
        # The server's own protocol holds the whole body already: nothing can be slow to arrive.
        return await _read(request.receive, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request.receive, limit)
    except TimeoutError:
        raise APIError(
            408,
            f"The request body did not arrive within {timeout_s:g} s (CURSORPIPE_BODY_TIMEOUT_S).",
            code="request_timeout",
            should_retry=False,
        ) from None


async def _read(receive: Receive, limit: int) -> bytes:
    # ASGI messages straight from ``receive`` (Request.stream() is an async generator more per
    # request, issue 16); usually the whole body is in the first one.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def parse_body(raw: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
    """``parse(parse_json_object(raw))``, in a worker thread when ``raw`` is large: the thread
    still shares the GIL, but the interpreter switches every few milliseconds, so the loop keeps
    serving instead of stalling for the whole parse."""

    def work() -> T:
        return parse(parse_json_object(raw))

    if len(raw) < OFFLOAD_BYTES:
        return work()
    return await asyncio.to_thread(work)


async def offload_if(heavy: bool, work: Callable[[], T]) -> T:
    """``work()``, in a worker thread when ``heavy`` (pure CPU work on request data only)."""
    return await asyncio.to_thread(work) if heavy else work()
