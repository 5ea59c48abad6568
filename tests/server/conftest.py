"""Fixtures for the server tests: apps over an injected MockTransport, in-process clients
(httpx.ASGITransport, lifespan run by hand) and a real uvicorn server on 127.0.0.1 (random port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from fastapi import FastAPI


@dataclass
class Served:
    """An app under test with its mock transport and an HTTP client."""

    app: FastAPI
    mock: MockTransport
    client: CursorClient
    http: httpx.AsyncClient
    base_url: str


def build(
    mock: MockTransport | None = None, *, keepalive_s: float | None = None, emulated: bool = False, **cfg: Any
) -> tuple[FastAPI, MockTransport, CursorClient]:
    """An app over a MockTransport (config values from ``cfg``)."""
    mock = mock or MockTransport()
    client = CursorClient(CursorPipeConfig(**cfg), transport=mock)
    return create_app(client=client, keepalive_s=keepalive_s, emulated=emulated), mock, client


@contextlib.asynccontextmanager
async def in_process(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0)  # let warm-up finish (the mock warms instantly)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as c:
            yield c


@contextlib.asynccontextmanager
async def over_socket(app: FastAPI, **uvicorn_options: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (random port) in this loop; yields the base URL.
    ``uvicorn_options`` go to ``uvicorn.Config``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 2}
    config = uvicorn.Config(app, **{**options, **uvicorn_options})
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def make_app() -> Callable[..., tuple[FastAPI, MockTransport, CursorClient]]:
    """Factory: ``make_app(mock=None, keepalive_s=None, **config)``."""
    return build


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Factory for in-process apps, closed at teardown: ``await served(mock, **config)``."""
    stack = contextlib.AsyncExitStack()

    async def factory(
        mock: MockTransport | None = None,
        *,
        keepalive_s: float | None = None,
        emulated: bool = False,
        headers: dict[str, str] | None = None,
        **cfg: Any,
    ) -> Served:
        app, m, client = build(mock, keepalive_s=keepalive_s, emulated=emulated, **cfg)
        http = await stack.enter_async_context(in_process(app, **(headers or {})))
        stack.push_async_callback(client.close)
        return Served(app, m, client, http, "http://127.0.0.1")

    async with stack:
        yield factory


@pytest.fixture
async def socket_server() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Factory for apps served over a real socket: ``await socket_server(mock, **config)``."""
    stack = contextlib.AsyncExitStack()

    async def factory(
        mock: MockTransport | None = None,
        *,
        keepalive_s: float | None = None,
        emulated: bool = False,
        **cfg: Any,
    ) -> Served:
        app, m, client = build(mock, keepalive_s=keepalive_s, emulated=emulated, **cfg)
        url = await stack.enter_async_context(over_socket(app))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        stack.push_async_callback(client.close)
        return Served(app, m, client, http, url)

    async with stack:
        yield factory


@pytest.fixture
async def over_socket_app() -> AsyncIterator[Callable[[FastAPI], Awaitable[str]]]:
    """Serve any app over a real socket: ``url = await over_socket_app(app)``."""
    stack = contextlib.AsyncExitStack()

    async def factory(app: FastAPI) -> str:
        return await stack.enter_async_context(over_socket(app))

    async with stack:
        yield factory


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON decoded; ``[DONE]`` kept as a string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture
def parse_sse() -> Callable[[str], list[Any]]:
    """``parse_sse(body) -> list`` of SSE data payloads."""
    return sse_events
