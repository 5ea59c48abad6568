"""``Gateway.from_config``: nothing for the single-process default, the right pieces otherwise."""

from __future__ import annotations

import pytest
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server._errors import APIError
from cursorpipe.server._gateway._callers import CallerClients
from cursorpipe.server._gateway._gateway import Gateway
from cursorpipe.server._gateway._redis import RedisStore
from cursorpipe.server._gateway._sessions import SingleClient
from cursorpipe.server._gateway._store import MemoryStore
from cursorpipe.testing.emulator import Emulator, expected_reply
from cursorpipe.types import TextDelta

from ._redis_server import RedisServer


async def test_default_is_the_plain_server() -> None:
    client = CursorClient(CursorPipeConfig(), transport=MockTransport())
    assert Gateway.from_config(CursorPipeConfig(), client) is None


async def test_token_mode_with_shared_state(redis_server: RedisServer) -> None:
    client = CursorClient(CursorPipeConfig(), transport=MockTransport())
    gw = Gateway.from_config(CursorPipeConfig(state_url=redis_server.url), client)
    assert gw is not None
    try:
        assert isinstance(gw.store, RedisStore) and isinstance(gw.clients, SingleClient)
        assert gw.shared and gw.limits is None and not gw.passthrough
        assert gw.caller({}).hash == ""
        assert await gw.state_problem() is None
    finally:
        await gw.aclose()


async def test_passthrough_in_process_with_limits() -> None:
    async with Emulator(accounts={"crsr_k1": "one"}) as emu:
        config = CursorPipeConfig(
            auth_mode="passthrough", backend_url=emu.url, per_key_concurrency=1, queue_timeout_s=0.1
        )
        gw = Gateway.from_config(config, CursorClient(config, transport=MockTransport()))
        assert gw is not None
        try:
            assert isinstance(gw.store, MemoryStore) and isinstance(gw.clients, CallerClients)
            assert gw.limits is not None and gw.limits.concurrency == 1
            caller = gw.caller({"authorization": "Bearer crsr_k1"})
            async with gw.admit(caller):
                with pytest.raises(APIError) as busy:  # the caller's one slot is taken
                    async with gw.admit(caller):
                        pass
                assert busy.value.code == "key_busy"
                events = gw.events(caller, lambda c: c.events("auto", prompt="hey"))
                text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
                assert text == expected_reply("hey")
            async with gw.admit(caller):  # released
                pass
        finally:
            await gw.aclose()
