"""``tool_handler`` on transports without native tools (issue 7): the client's own loop over the
emulated tool protocol (run → parse the ``<tool_calls>`` block → call the handler → a new request
with the calls and results → ... until the model answers), scripted with ``MockTransport``; and the
subprocess transport with the fake ``agent`` (which never emits tool blocks by itself)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import (
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    ToolLoopError,
    ToolResultTimeoutError,
)
from cursorpipe._pipeline.emulated_tools import MAX_TOOL_ROUNDS
from cursorpipe._tool_emulation import CLOSE_TAG, OPEN_TAG
from cursorpipe.testing.fake_agent import catalog, executable
from cursorpipe.transports.mock import MockSession
from cursorpipe.types import (
    Event,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    UsageEvent,
)

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def block(*calls: tuple[str, dict[str, Any]]) -> str:
    payload = {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    return f"Let me check. {OPEN_TAG}{json.dumps(payload)}{CLOSE_TAG}"


def results_in(request: TurnRequest) -> list[str]:
    """The tool results the emulated protocol rendered into the request (as user text)."""
    return [m.text.split(":\n", 1)[1] for m in request.messages if m.text.startswith("Result of tool call")]


def weather_model(rounds: int = 1) -> MockTransport:
    """Calls get_weather ``rounds`` times (one per round), then answers from the results."""

    def script(request: TurnRequest, session: MockSession | None) -> str:
        seen = results_in(request)
        if len(seen) < rounds:
            return block(("get_weather", {"city": f"City{len(seen) + 1}"}))
        return "Answer: " + " / ".join(seen)

    return MockTransport(script=script)


async def test_emulated_loop_calls_the_handler_and_answers() -> None:
    mock = weather_model()
    seen: list[dict[str, Any]] = []

    async def handler(call: ToolCall) -> str:
        seen.append(call.parsed_arguments())
        return "sunny in " + str(call.parsed_arguments()["city"])

    async with CursorClient(transport=mock) as client:
        events: list[Event] = [
            e async for e in client.events("auto", prompt="weather?", tools=[WEATHER], tool_handler=handler)
        ]
        result = await client.complete("auto", prompt="weather?", tools=[WEATHER], tool_handler=handler)
    assert seen == [{"city": "City1"}, {"city": "City1"}]
    assert result.text.endswith("Answer: sunny in City1") and result.stop_reason == "stop"
    assert result.tool_calls == ()
    (call,) = [e for e in events if isinstance(e, ToolCallEvent)]
    assert call.emulated and call.handled
    assert sum(isinstance(e, TransportInfo) for e in events) == 1
    assert sum(isinstance(e, TurnEnd) for e in events) == 1 and isinstance(events[-1], TurnEnd)
    assert sum(isinstance(e, UsageEvent) for e in events) == 1
    # The second request carried the model's call and the result (stateless resend).
    second = mock.requests[1]
    assert any(OPEN_TAG in m.text and m.role == "assistant" for m in second.messages)
    assert results_in(second) == ["sunny in City1"]


async def test_emulated_loop_several_rounds_and_usage_adds_up() -> None:
    mock = weather_model(rounds=3)

    async def handler(call: ToolCall) -> str:
        return str(call.parsed_arguments()["city"]).lower()

    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="go", tools=[WEATHER], tool_handler=handler)
    # Text the model writes before its calls streams too (like a native multi-step turn).
    assert result.text == "Let me check. " * 3 + "Answer: city1 / city2 / city3"
    assert len(mock.requests) == 4
    assert result.usage.output_tokens > 0


async def test_emulated_loop_handler_error_reaches_the_model() -> None:
    mock = weather_model()

    async def broken(call: ToolCall) -> str:
        raise ValueError("no data for crsr_secretkey_123456")

    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="go", tools=[WEATHER], tool_handler=broken)
    assert result.text == "Let me check. Answer: Error: ValueError: no data for [REDACTED]"
    assert "crsr_secretkey" not in result.text and "[REDACTED]" in result.text


async def test_emulated_loop_handler_timeout() -> None:
    mock = weather_model()

    async def slow(call: ToolCall) -> str:
        await asyncio.sleep(30)
        return "late"

    config = CursorPipeConfig(strategy="subprocess", tool_result_timeout_s=0.2)
    async with CursorClient(config, transport=mock) as client:
        with pytest.raises(ToolResultTimeoutError):
            await client.complete("auto", prompt="go", tools=[WEATHER], tool_handler=slow)
        assert client.active_requests == 0


async def test_emulated_loop_is_capped() -> None:
    def script(request: TurnRequest, session: MockSession | None) -> str:
        return block(("get_weather", {"city": "Loop"}))

    calls = 0

    async def handler(call: ToolCall) -> str:
        nonlocal calls
        calls += 1
        return "again"

    mock = MockTransport(script=script)
    async with CursorClient(transport=mock) as client:
        with pytest.raises(ToolLoopError):
            await client.complete("auto", prompt="go", tools=[WEATHER], tool_handler=handler)
    assert calls == MAX_TOOL_ROUNDS and len(mock.requests) == MAX_TOOL_ROUNDS + 1


async def test_emulated_loop_in_a_session_sends_only_results() -> None:
    mock = weather_model()

    async def handler(call: ToolCall) -> str:
        return "fog"

    async with CursorClient(transport=mock) as client, client.session("auto") as session:
        result = await session.prompt("weather?", tools=[WEATHER], tool_handler=handler)
    assert result.text == "Let me check. Answer: fog"
    follow_up = mock.requests[-1]
    assert [m.role for m in follow_up.messages if m.role != "system"] == ["user"]
    assert results_in(follow_up) == ["fog"]


async def test_without_handler_emulated_calls_end_the_turn() -> None:
    mock = weather_model()
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="go", tools=[WEATHER])
    assert result.stop_reason == "tool_calls" and [c.name for c in result.tool_calls] == ["get_weather"]
    assert len(mock.requests) == 1


@pytest.fixture
def fake_agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("FAKE_AGENT_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(catalog.ENV_STATE_DIR, str(tmp_path / "chats"))


@pytest.mark.usefixtures("fake_agent_env")
async def test_subprocess_with_handler_and_no_calls_is_one_round() -> None:
    called: list[ToolCall] = []

    async def handler(call: ToolCall) -> str:
        called.append(call)
        return "unused"

    config = CursorPipeConfig(strategy="subprocess", agent_bin=executable())
    async with CursorClient(config) as client:
        events = [
            e async for e in client.events("auto", prompt="hello", tools=[WEATHER], tool_handler=handler)
        ]
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and not e.notice)
    assert text.startswith("Fake reply to:")
    assert called == [] and isinstance(events[-1], TurnEnd) and events[-1].stop_reason == "stop"
    assert isinstance(events[0], TransportInfo) and events[0].transport == "subprocess"
