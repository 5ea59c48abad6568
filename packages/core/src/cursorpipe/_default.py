"""The lazily created module-level client behind ``cursorpipe.generate/chat/stream/warmup/close``.

Clients are bound to an event loop (their sockets and pipes are), so there is one default client
per running loop, created on first use from the environment's configuration.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from .client import CursorClient

if TYPE_CHECKING:
    from .config import CursorPipeConfig

__all__ = ["chat", "close", "default_client", "generate", "stream", "warmup"]

P = ParamSpec("P")
T = TypeVar("T")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CursorClient] = weakref.WeakKeyDictionary()


def default_client(config: CursorPipeConfig | None = None) -> CursorClient:
    """The default client of the running loop (created on first use; replaced once closed)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.closed:
        client = CursorClient(config)
        _clients[loop] = client
    return client


def _forwarded(method: Callable[..., object], call: Callable[..., object]) -> None:
    """Give ``call`` the name, docstring and signature (minus ``self``) of the client ``method``
    it forwards to, so ``help()``, IDEs and ``inspect`` show the real parameters, written once."""
    functools.update_wrapper(call, method)
    sig = inspect.signature(method)
    call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    call.__doc__ = f"``CursorClient.{method.__name__}`` on the default client.\n\n{method.__doc__ or ''}"


def _on_default(method: Callable[Concatenate[CursorClient, P], Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``method`` as a module function running on the running loop's default client."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await method(default_client(), *args, **kwargs)

    _forwarded(method, call)
    return call


def _stream_on_default(
    method: Callable[Concatenate[CursorClient, P], AsyncGenerator[T, None]],
) -> Callable[P, AsyncGenerator[T, None]]:
    """The async generator ``method`` as a module function on the default client (closing the
    client's stream, and so cancelling the turn, when the caller stops early)."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
        async with aclosing(method(default_client(), *args, **kwargs)) as items:
            async for item in items:
                yield item

    _forwarded(method, call)
    return call


generate = _on_default(CursorClient.generate)
chat = _on_default(CursorClient.chat)
stream = _stream_on_default(CursorClient.stream)
warmup = _on_default(CursorClient.warmup)


async def close() -> None:
    """Close the running loop's default client (a later call creates a fresh one). Idempotent."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.close()
