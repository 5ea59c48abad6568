"""Issue 12 item 5 over real sockets, with the server's own uvicorn settings (``uvicorn_config``):
connections that send nothing, half a request head or a trickle of body are closed in bounded time;
the connection cap refuses at once in OpenAI's shape; malformed HTTP is answered in OpenAI's shape;
and at a low open-file limit a flood of idle sockets neither starves ``/health`` nor floods the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from cursorpipe.server._http import ThrottleFilter
from cursorpipe.server.cli import uvicorn_config


@contextlib.asynccontextmanager
async def hardened(**cfg: object) -> AsyncIterator[tuple[str, int]]:
    """The app over MockTransport, served with uvicorn_config on a random loopback port."""
    config = CursorPipeConfig(pool_size=0, **cfg)  # type: ignore[arg-type]
    client = CursorClient(config, transport=MockTransport())
    app = create_app(client=client)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn_config(app, config, drain_timeout_s=1)
    uv.log_level = logging.WARNING
    server = uvicorn.Server(uv)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        await client.close()


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, float]:
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout)  # until the server closes
    return data, time.monotonic() - started


def _error_of(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


async def test_silent_and_half_sent_heads_are_closed_with_408() -> None:
    async with hardened(header_timeout_s=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
        data, took = await _read_all(reader, 5)
        status, err = _error_of(data)
        assert status == 408 and err["code"] == "request_timeout" and took < 3
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        for _ in range(3):  # keeps trickling, but the head never completes in time
            await asyncio.sleep(0.2)
            writer.write(b"a")
        data, took = await _read_all(reader, 5)
        assert _error_of(data)[0] == 408
        writer.close()


async def test_idle_keepalive_connection_is_closed() -> None:
    async with hardened(keepalive_timeout_s=1) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b'alive"}'), 5)
        assert b"200 OK" in first
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b"" and time.monotonic() - started < 3
        writer.close()


async def test_slow_body_is_408_and_frees_its_slot() -> None:
    async with hardened(body_timeout_s=0.5, max_concurrency=1) as (base, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"messages": ['
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408")
        writer.close()
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200  # the only slot is free again


async def test_connection_cap_refuses_at_once_in_openai_shape() -> None:
    async with hardened(max_connections=5) as (base, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data, took = await _read_all(reader, 5)
        status, err = _error_of(data)
        assert status == 503 and err["code"] == "too_many_connections" and took < 1
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/health")).status_code == 200


async def test_malformed_http_is_answered_in_openai_shape() -> None:
    async with hardened() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        data, _ = await _read_all(reader, 5)
        status, err = _error_of(data)
        assert status == 400 and err["code"] == "invalid_http_request"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A request head over the cap (h11_max_incomplete_event_size), arriving in pieces.
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        for piece in (20_000, 14_000):  # just past 32 KiB, and nothing after (no reset)
            writer.write(b"a" * piece)
            await writer.drain()
            await asyncio.sleep(0.1)
        data, _ = await _read_all(reader, 5)
        assert _error_of(data)[0] == 400
        writer.close()


def test_throttle_filter_lets_one_line_per_interval() -> None:
    logger = logging.getLogger("cursorpipe.test.throttle")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    flt = ThrottleFilter(interval_s=0.2)
    logger.addFilter(flt)
    logger.propagate = False
    try:
        for _ in range(1000):
            logger.error("socket.accept() out of system resource")
        logger.error("another condition")
        assert len(records) == 2
        time.sleep(0.25)
        logger.error("socket.accept() out of system resource")
        assert len(records) == 3 and "999 similar messages suppressed" in records[-1].getMessage()
    finally:
        logger.removeFilter(flt)
        logger.removeHandler(handler)


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys
    from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
    from cursorpipe.server import create_app
    from cursorpipe.server.cli import serve, _setup_logging

    config = CursorPipeConfig(port=int(sys.argv[1]), pool_size=0, header_timeout_s=1.0)
    _setup_logging("info")
    serve(create_app(client=CursorClient(config, transport=MockTransport())), config, drain_timeout_s=1)
    """
)


@pytest.mark.slow
async def test_idle_socket_flood_at_a_low_fd_limit_keeps_health_answering() -> None:
    """The red-team case scaled down: 1,100 idle sockets at 1,024 descriptors became 400 at 256."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=low_limit,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    sockets: list[socket.socket] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health/live")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            for _ in range(400):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                sockets.append(s)
            # While the idle sockets hold every slot, /health is answered at once: either served or
            # refused cleanly (503 too_many_connections), never a timeout.
            latencies = []
            statuses = []
            for _ in range(6):
                started = time.monotonic()
                r = await http.get("/health", headers={"connection": "close"})
                latencies.append(time.monotonic() - started)
                statuses.append(r.status_code)
                assert r.status_code == 200 or r.json()["error"]["code"] == "too_many_connections", r.text
                await asyncio.sleep(0.25)
            assert max(latencies) < 2.0, latencies
            # The header timeout (1 s) closes the idle sockets: everything is served again.
            await asyncio.sleep(1.5)
            assert (await http.get("/health")).status_code == 200
            chat = await http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "still here"}]}
            )
            assert chat.status_code == 200, chat.text
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    log = err.decode("utf-8", "replace")
    # Rate-limited: a handful of lines, not one (with a traceback) per refused accept.
    assert len(log) < 20_000, log[-3000:]
    assert log.count("Traceback") <= 3, log[-3000:]


async def test_websocket_upgrade_is_answered_as_http_in_openai_shape() -> None:
    async with hardened() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /v1/models/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert not head.startswith(b"HTTP/1.1 101"), head
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        body = json.loads(await reader.readexactly(length))
        assert set(body["error"]) == {"message", "type", "param", "code"}
        writer.close()


async def test_a_200_mb_prompt_is_refused_before_it_is_read() -> None:
    """The red team's 200 MB prompt took the server to 2.1 GB and a retryable 502: now a 413 with
    x-should-retry: false as soon as the headers arrive, with the server's memory unchanged."""
    from ._probes import rss_mib

    async with hardened() as (_, port):
        before = rss_mib()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n"
            + b'{"messages": [{"role": "user", "content": "'
            + b"x" * 65536
        )
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413") and b"x-should-retry: false" in head.lower(), head
        assert time.monotonic() - started < 2
        writer.close()
        assert rss_mib() - before < 50
