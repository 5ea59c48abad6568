"""Both HTTP protocol classes (httptools, used when installed, and the h11 fallback) carry the same
defences: a header deadline, a head size cap, and malformed HTTP answered in OpenAI's shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from cursorpipe import MockTransport
from cursorpipe.server._http import hardened_protocol

from .conftest import build, over_socket


@contextlib.asynccontextmanager
async def _serve(httptools: bool) -> AsyncIterator[int]:
    app, _, client = build(pool_size=0)
    protocol = hardened_protocol(
        header_timeout_s=0.5, max_connections=64, max_head_bytes=4096, httptools=httptools
    )
    # h11 caps the head itself (uvicorn's setting, as uvicorn_config sets it); httptools through
    # the protocol class's max_head_bytes
    async with over_socket(app, http=protocol, ws="none", h11_max_incomplete_event_size=4096) as url:
        yield int(url.rsplit(":", 1)[1])
    await client.close()


async def _exchange(port: int, data: bytes, pieces: int = 1) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.02)
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11"])
async def test_both_protocols_defend_the_same_way(httptools: bool) -> None:
    async with _serve(httptools) as port:
        status, err = await _exchange(port, b"THIS IS NOT HTTP\r\n\r\n")
        assert status == 400 and err["code"] == "invalid_http_request"
        status, err = await _exchange(port, b"")  # a silent connection
        assert status == 408 and err["code"] == "request_timeout"
        big = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 6000
        status, err = await _exchange(port, big, pieces=3)  # never completes, over the cap
        assert status == 400 and err["code"] == "invalid_http_request"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Ok: " + b"a" * 2000 + b"\r\n\r\n")
        assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b'alive"}'), 5)
        writer.close()


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11"])
async def test_a_stream_longer_than_the_header_deadline_is_not_cut(httptools: bool) -> None:
    """The header deadline covers waiting for a request head, never the answer to a request
    whose head and body arrived (it used to end long streams with a 408 on httptools)."""
    app, _, client = build(MockTransport(delay_s=0.25), pool_size=0)
    protocol = hardened_protocol(header_timeout_s=0.5, max_connections=64, httptools=httptools)
    async with over_socket(app, http=protocol, ws="none") as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        messages = [{"role": "user", "content": "one two three four five six"}]
        body = json.dumps({"model": "auto", "stream": True, "messages": messages}).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        raw = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    await client.close()
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"request_timeout" not in raw and b"data: [DONE]" in raw
