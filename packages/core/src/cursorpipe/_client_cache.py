"""One ``CursorClient`` per event loop and configuration (what integrations such as ChatCursor and
CursorLLM use, so models with the same settings share connections and warm agent processes).

A client owns loop-bound resources (httpx connections, subprocess pipes), so it must only ever be
used from the loop it first ran on. Async calls use a client of the caller's running loop; sync
calls run on the loop of ``SyncBridge.default()`` and use that loop's client. Clients
are shared between models with the same configuration so connection pools and warm agent
processes are reused.

Clients are closed with their loop: each loop's clients are watched by a small async generator
registered with that loop, and ``asyncio.run`` (like ``asyncio.Runner`` and
``SyncBridge.close``) closes every live async generator of a loop before closing the loop, so
sockets and agent processes are released even when callers never call ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from .client import CursorClient

__all__ = ["client_for_loop", "close_clients"]

_lock = threading.Lock()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, CursorClient]] = (
    weakref.WeakKeyDictionary()
)
# The loop tracks its async generators only weakly; these references keep the watchers alive.
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
    weakref.WeakKeyDictionary()
)


async def _close_with_loop(clients: dict[str, CursorClient]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        doomed = list(clients.values())
        clients.clear()
        for client in doomed:
            with contextlib.suppress(Exception):
                await client.close()


def _watch(loop: asyncio.AbstractEventLoop, clients: dict[str, CursorClient]) -> None:
    watcher = _close_with_loop(clients)
    # Advance it to its first yield right here, inside the running loop, so the loop's asyncgen
    # "first iteration" hook registers it; nothing is awaited before that yield.
    step = watcher.asend(None)
    with contextlib.suppress(StopIteration):
        step.send(None)
    _watchers[loop] = watcher


def _key(overrides: Mapping[str, Any]) -> str:
    # Hash instead of keeping the raw settings (which may hold an API key) as a readable dict key.
    blob = json.dumps(dict(overrides), sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def client_for_loop(overrides: Mapping[str, Any]) -> CursorClient:
    """The running loop's client for a configuration (created on first use; replaced once closed).

    Must be called from inside a running loop. ``CursorPipeConfig`` validates the settings, so bad
    values raise ``cursorpipe.ConfigurationError`` naming the setting.
    """
    loop = asyncio.get_running_loop()
    key = _key(overrides)
    with _lock:
        per_loop = _clients.get(loop)
        if per_loop is None:
            per_loop = _clients[loop] = {}
            _watch(loop, per_loop)
        client = per_loop.get(key)
        if client is None or client.closed:
            from .config import CursorPipeConfig

            client = CursorClient(CursorPipeConfig(**overrides))
            per_loop[key] = client
        return client


async def close_clients(overrides: Mapping[str, Any] | None = None) -> None:
    """Close the running loop's clients (only the one for ``overrides`` when given)."""
    loop = asyncio.get_running_loop()
    with _lock:
        per_loop = _clients.get(loop, {})
        if overrides is None:
            doomed = list(per_loop.values())
            per_loop.clear()
        else:
            one = per_loop.pop(_key(overrides), None)
            doomed = [one] if one is not None else []
    for client in doomed:
        await client.close()
