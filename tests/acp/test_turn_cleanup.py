"""A finished acp turn leaves no async generator for the garbage collector to close (issue 16):
each one is closed through the loop's thread-safe wake-up, a self-pipe write per request."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from cursorpipe.testing.fake_agent.catalog import expected_reply

from .conftest import MakeClient

TURNS = 4


async def test_finished_turns_leave_no_generator_to_the_garbage_collector(make_client: MakeClient) -> None:
    client = make_client()
    assert await client.generate("auto", "warm") == expected_reply("warm")
    finalized: list[str] = []
    loop = asyncio.get_running_loop()
    first, finalizer = sys.get_asyncgen_hooks()

    def record(agen: Any) -> None:
        finalized.append(agen.ag_code.co_qualname)
        loop._asyncgen_finalizer_hook(agen)  # type: ignore[attr-defined]  # what asyncio does

    sys.set_asyncgen_hooks(firstiter=first, finalizer=record)
    try:
        for i in range(TURNS):
            assert await client.generate("auto", f"q{i}") == expected_reply(f"q{i}")
        session = await client.create_session()
        assert (await session.prompt("in a session")).text == expected_reply("in a session")
        await asyncio.sleep(0)
    finally:
        sys.set_asyncgen_hooks(firstiter=first, finalizer=finalizer)
    assert finalized == []
