"""Many concurrent turns over RunSSE + BidiAppend (HTTP/1.1): every RunSSE holds a connection for
its whole turn and its appends need others, so a connection cap below the number of concurrent
turns deadlocks (it surfaced as 30 s stalls at 64 concurrent streams)."""

from __future__ import annotations

import asyncio

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.emulator import Emulator, expected_reply


@pytest.mark.slow
async def test_100_concurrent_runsse_turns_all_answer_correctly() -> None:
    async with Emulator() as emu:
        cfg = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
        async with CursorClient(cfg) as client:
            prompts = [f"load prompt {i}" for i in range(100)]
            answers = await asyncio.wait_for(
                asyncio.gather(*(client.generate("auto", p) for p in prompts)), timeout=60
            )
            assert list(answers) == [expected_reply(p) for p in prompts]
            assert client.active_requests == 0
