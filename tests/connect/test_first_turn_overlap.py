"""The first turn overlaps the token exchange with the model catalogue's round trip (issue 16 cold
start): the two do not depend on each other (the catalogue is read with the raw API key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.auth import TokenProvider
from cursorpipe.errors import AuthenticationError
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply
from cursorpipe.transports.connect import ConnectTransport


async def test_token_exchange_runs_while_the_catalogue_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    exchanged = asyncio.Event()
    token, fetch = TokenProvider.token, ConnectTransport._fetch_models

    async def tracked_token(self: TokenProvider) -> str:
        value = await token(self)
        exchanged.set()
        return value

    async def catalogue_after_the_token(self: ConnectTransport) -> Any:
        # Waits for the exchange to finish: only an exchange already under way can finish it.
        async with asyncio.timeout(5):
            await exchanged.wait()
        return await fetch(self)

    monkeypatch.setattr(TokenProvider, "token", tracked_token)
    monkeypatch.setattr(ConnectTransport, "_fetch_models", catalogue_after_the_token)
    async with Emulator() as emu:
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key)
        async with CursorClient(config, transport=ConnectTransport(config)) as client:
            assert await client.generate("composer-2", "first") == expected_reply("first")
        exchanges = [r for r in emu.requests if r.path.endswith("/auth/exchange_user_api_key")]
        assert len(exchanges) == 1  # the attempt joined the prefetched exchange


async def test_a_refused_key_still_fails_the_first_turn_once(caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key="crsr_test_not_a_valid_key", max_retries=0
        )
        transport = ConnectTransport(config)
        async with CursorClient(config, transport=transport) as client:
            with pytest.raises(AuthenticationError):
                await client.generate("composer-2", "first")
            await transport.idle()
        exchanges = [r for r in emu.requests if r.path.endswith("/auth/exchange_user_api_key")]
        assert len(exchanges) == 1  # the refusal is remembered, not asked twice
    assert "exception was never retrieved" not in caplog.text


async def test_first_turn_waits_for_the_server_config_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetch also asks GetServerConfig (HTTP/2 ``auto``): the attempt, asking while that call
    is in flight, waits for its answer (here: HTTP/2 forced on for a plain-http backend, §3.4)
    instead of deciding without it, and the call is made once."""
    release = asyncio.Event()
    unary = ConnectTransport._unary

    async def slow_server_config(self: ConnectTransport, path: str, body: bytes) -> bytes:
        if path.endswith("/GetServerConfig"):
            await release.wait()
        return await unary(self, path, body)

    monkeypatch.setattr(ConnectTransport, "_unary", slow_server_config)
    async with Emulator(Behaviour(advertise_http2=True)) as emu:
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key)
        transport = ConnectTransport(config)
        async with CursorClient(config, transport=transport) as client:
            turn = asyncio.create_task(client.generate("composer-2", "first"))
            await asyncio.sleep(0.05)
            assert not turn.done()
            release.set()
            async with asyncio.timeout(10):
                assert await turn == expected_reply("first")
            assert transport.last_channel == "run"
        paths = [r.path for r in emu.requests]
        assert paths.count("/aiserver.v1.ServerConfigService/GetServerConfig") == 1
