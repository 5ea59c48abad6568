"""What a finished connect turn leaves behind (issue 16): no async generator for the garbage
collector to close (each one costs a thread-safe loop wake-up, a self-pipe write), and on the
HTTP/1.1 wire the RunSSE connection goes back to the pool instead of a new one per turn."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.emulator import Emulator, expected_reply

TURNS = 4


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


def _client(emu: Emulator, mode: str) -> CursorClient:
    return CursorClient(
        CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=mode)
    )


@pytest.mark.parametrize("mode", ["never", "always"])
async def test_finished_turns_leave_no_generator_to_the_garbage_collector(emu: Emulator, mode: str) -> None:
    finalized: list[str] = []
    loop = asyncio.get_running_loop()
    first, finalizer = sys.get_asyncgen_hooks()

    def record(agen: Any) -> None:
        finalized.append(agen.ag_code.co_qualname)
        loop._asyncgen_finalizer_hook(agen)  # type: ignore[attr-defined]  # what asyncio does

    async with _client(emu, mode) as client:
        assert await client.generate("composer-2", "warm") == expected_reply("warm")
        sys.set_asyncgen_hooks(firstiter=first, finalizer=record)
        try:
            for i in range(TURNS):
                assert await client.generate("composer-2", f"q{i}") == expected_reply(f"q{i}")
            await asyncio.sleep(0)
        finally:
            sys.set_asyncgen_hooks(firstiter=first, finalizer=finalizer)
    assert finalized == []


async def test_runsse_turns_reuse_the_connection(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    connect_tcp = anyio.connect_tcp

    async def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0] if args else kwargs.get("remote_host")))
        return await connect_tcp(*args, **kwargs)

    async with _client(emu, "never") as client:
        assert await client.generate("composer-2", "warm") == expected_reply("warm")
        monkeypatch.setattr(anyio, "connect_tcp", counting)
        for i in range(TURNS):
            assert await client.generate("composer-2", f"q{i}") == expected_reply(f"q{i}")
    # Each turn's appends may need a connection beside the open RunSSE (connect.md §5.7), but the
    # RunSSE connection itself is reused: far fewer than one new connection per turn.
    assert len(opened) < TURNS, opened
