"""Fixtures for the Anthropic route: cursorpipe-server over the connect transport against the
Cursor API emulator on a real socket, and SDK clients pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Behaviour, Emulator
from fastapi import FastAPI


@dataclass
class Live:
    """A server on a socket in front of an emulator."""

    url: str
    emu: Emulator
    app: FastAPI

    def client(self, **kw: Any) -> anthropic.AsyncAnthropic:
        kw.setdefault("api_key", "unused")
        return anthropic.AsyncAnthropic(base_url=self.url, max_retries=0, timeout=60, **kw)

    def sync_client(self, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("api_key", "unused")
        return anthropic.Anthropic(base_url=self.url, max_retries=0, timeout=60, **kw)


@pytest.fixture
async def live(over_socket_app) -> AsyncIterator[Callable[..., Awaitable[Live]]]:
    """Factory: ``await live(behaviour=None, **config)`` -> :class:`Live` (closed at teardown)."""
    stack = contextlib.AsyncExitStack()

    async def factory(behaviour: Behaviour | None = None, **cfg: Any) -> Live:
        emu = await stack.enter_async_context(Emulator(behaviour))
        settings: dict[str, Any] = {"pool_size": 1, "max_retries": 0}
        settings.update(cfg)
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, **settings)
        app = create_app(config, emulated=True)
        url = await over_socket_app(app)
        return Live(url, emu, app)

    async with stack:
        yield factory
