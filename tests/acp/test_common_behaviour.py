"""Failure behaviour both CLI transports share, against the same fake ``agent``: ``acp`` (one
persistent ``agent acp``) and ``subprocess`` (``agent --print`` per request). The happy paths common
to all transports live in tests/transports; these are the fake agent's knobs (hang, account
states, crash) that only the CLI transports can be driven with."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cursorpipe import (
    AgentCrashError,
    AgentTimeoutError,
    AuthenticationError,
    CursorClient,
    CursorPipeConfig,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    UsageEvent,
    UsageLimitError,
)
from cursorpipe.testing.fake_agent.catalog import (
    ENV_ACCOUNT,
    ENV_CRASH_AFTER,
    ENV_CRASH_CODE,
    ENV_HANG_AFTER,
    expected_reply,
    expected_thinking,
)

pytestmark = pytest.mark.parametrize("strategy", ["acp", "subprocess"])

ClientFor = Callable[..., CursorClient]


@pytest.fixture
async def client_for(agent_bin: str) -> AsyncIterator[ClientFor]:
    clients: list[CursorClient] = []

    def make(strategy: str, **cfg: Any) -> CursorClient:
        cfg.setdefault("max_retries", 0)
        client = CursorClient(CursorPipeConfig(strategy=strategy, agent_bin=agent_bin, **cfg))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_event_order_and_thinking(strategy: str, client_for: ClientFor) -> None:
    client = client_for(strategy)
    events = [e async for e in client.events("auto", prompt="order")]
    assert isinstance(events[0], TransportInfo) and events[0].transport == strategy
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], TurnEnd)
    assert events[-1].stop_reason == "stop"
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert thinking == expected_thinking("order")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected_reply("order")


async def test_timeout(strategy: str, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HANG_AFTER, "1")
    client = client_for(strategy)
    await client.warmup(1)
    start = time.monotonic()
    with pytest.raises(AgentTimeoutError):
        await client.generate("auto", "hang", timeout_s=1.0)
    assert time.monotonic() - start < 6


async def test_usage_limit(strategy: str, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "usage_limit")
    client = client_for(strategy)
    with pytest.raises(UsageLimitError):
        await client.generate("auto", "hi")


async def test_logged_out(strategy: str, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "logged_out")
    client = client_for(strategy)
    with pytest.raises(AuthenticationError):
        await client.generate("auto", "hi")


async def test_crash_mid_stream(
    strategy: str, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CRASH_AFTER, "2")
    monkeypatch.setenv(ENV_CRASH_CODE, "5")
    client = client_for(strategy)
    with pytest.raises(AgentCrashError) as info:
        await client.generate("auto", "crash")
    assert info.value.exit_code == 5
