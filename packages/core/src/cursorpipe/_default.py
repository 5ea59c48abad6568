"""The lazily created module-level client behind ``cursorpipe.generate/chat/stream/warmup/close``.

Clients are bound to an event loop (their sockets and pipes are), so there is one default client
per running loop, created on first use from the environment's configuration.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._limits import DEFAULT_MAX_TOKENS
from .client import CursorClient
from .types import ChatMessage

if TYPE_CHECKING:
    from .config import CursorPipeConfig

__all__ = ["chat", "close", "default_client", "generate", "stream", "warmup"]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CursorClient] = weakref.WeakKeyDictionary()


def default_client(config: CursorPipeConfig | None = None) -> CursorClient:
    """The default client of the running loop (created on first use; replaced once closed)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.closed:
        client = CursorClient(config)
        _clients[loop] = client
    return client


async def generate(
    model: str | None,
    prompt: str,
    *,
    system: str | None = None,
    temperature: float = 0,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    timeout_s: float | None = None,
) -> str:
    """``CursorClient.generate`` on the default client."""
    return await default_client().generate(
        model, prompt, system=system, temperature=temperature, max_tokens=max_tokens, timeout_s=timeout_s
    )


async def chat(
    model: str | None,
    messages: Sequence[Mapping[str, Any] | ChatMessage],
    *,
    temperature: float = 0,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    timeout_s: float | None = None,
) -> str:
    """``CursorClient.chat`` on the default client."""
    return await default_client().chat(
        model, messages, temperature=temperature, max_tokens=max_tokens, timeout_s=timeout_s
    )


async def stream(
    model: str | None, prompt: str, *, system: str | None = None, timeout_s: float | None = None
) -> AsyncGenerator[str, None]:
    """``CursorClient.stream`` on the default client."""
    async for chunk in default_client().stream(model, prompt, system=system, timeout_s=timeout_s):
        yield chunk


async def warmup(pool_size: int = 5) -> None:
    """``CursorClient.warmup`` on the default client."""
    await default_client().warmup(pool_size)


async def close() -> None:
    """Close the running loop's default client (a later call creates a fresh one). Idempotent."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.close()
