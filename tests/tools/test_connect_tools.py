"""Native tool calling on the connect transport against the emulator (issue 7), on both wires.

Stateless (OpenAI style, no ``tool_handler``): the turn ends at the model's tool calls and the next
request carries the results. Stateful (``tool_handler``): each call is answered with ``mcp_result``
inside the same run and the turn continues to an answer that depends on the results. Plus parallel
calls, several rounds, a raising handler, the handler timeout, ``tool_choice`` and sessions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig, ToolResultTimeoutError
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.testing.emulator import (
    CUSTOM_TOOLS_PROVIDER,
    Emulator,
    ToolCallScript,
    expected_reply,
    expected_tool_reply,
    expected_tools_reply,
    tool_rounds,
)
from cursorpipe.transports.connect import ConnectTransport
from cursorpipe.transports.connect._turn import MCP_ALLOWED_TOOLS
from cursorpipe.types import (
    Event,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    UsageEvent,
)

MODES = ["never", "always"]
CHANNEL = {"never": "runsse", "always": "run"}
MODEL = "composer-2"
ASK = "What is the weather in Oslo?"

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}


def make_client(emu: Emulator, mode: str, **config: Any) -> tuple[CursorClient, ConnectTransport]:
    """A connect client on one wire; no client retries, so one request = one emulator run."""
    cfg = CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=mode, max_retries=0, **config
    )
    transport = ConnectTransport(cfg)
    return CursorClient(cfg, transport=transport), transport


def calls_of(events: list[Event]) -> list[ToolCallEvent]:
    return [e for e in events if isinstance(e, ToolCallEvent)]


def assistant_message(events: list[Event]) -> dict[str, Any]:
    """The OpenAI assistant message a stateless caller echoes back, built from the deltas."""
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            slot = calls.setdefault(e.index, {"id": None, "name": None, "arguments": ""})
            if e.id is not None:
                slot["id"], slot["name"] = e.id, e.name
            slot["arguments"] += e.arguments_delta
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(calls.items())
        ],
    }


def no_tool_tasks() -> bool:
    names = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    return not names & {
        "cursorpipe-tool",
        "cursorpipe-exec-heartbeat",
        "cursorpipe-pump",
        "cursorpipe-heartbeat",
    }


# ---------------------------------------------------------------------------------------------
# stateless (OpenAI style)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_stateless_turn_ends_at_tool_calls(emu: Emulator, mode: str) -> None:
    client, transport = make_client(emu, mode)
    async with client:
        events = [e async for e in client.events(MODEL, prompt=ASK, tools=[WEATHER])]
        assert transport.last_channel == CHANNEL[mode]
    assert isinstance(events[0], TransportInfo)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    (call,) = calls_of(events)
    # id + name first, then argument fragments with the same index; they add up to the call.
    assert deltas[0].index == 0 and deltas[0].id == call.call.id and deltas[0].name == "get_weather"
    assert len(deltas) > 2 and all(d.index == 0 and d.id is None for d in deltas[1:])
    assert "".join(d.arguments_delta for d in deltas) == call.call.arguments
    assert call.call.parsed_arguments() == {"city": "Oslo"}
    assert call.emulated is False and call.handled is False and call.error is None
    assert isinstance(events[-2], UsageEvent) and isinstance(events[-1], TurnEnd)
    assert events[-1].stop_reason == "tool_calls"
    assert not any(isinstance(e, TextDelta) for e in events)
    run = emu.runs[-1]
    # The tools went as McpToolDefinitions (official SDK shape); built-in tools stay off.
    (offered,) = run.run_request.mcp_tools.mcp_tools  # type: ignore[union-attr]
    assert offered.tool_name == "get_weather" and offered.provider_identifier == CUSTOM_TOOLS_PROVIDER
    assert offered.name == f"{CUSTOM_TOOLS_PROVIDER}-get_weather"
    assert offered.input_schema.struct_value.fields["required"].list_value.values[0].string_value == "city"
    # live-dialect.md rows 7-8: the MCP family is allowed (built-in tools stay off) and the run is AGENT.
    assert run.headers.get("x-cursor-agent-allowed-tools") == MCP_ALLOWED_TOOLS
    assert run.run_request.action.user_message_action.user_message.mode == pb.AGENT_MODE_AGENT  # type: ignore[union-attr]
    # The upstream run was cancelled cleanly (cancel_action, in the background while the client
    # closed), the call left unanswered.
    assert run.outcome == "cancelled" and run.tool_calls[0].outcome in ("pending", "timeout")
    assert no_tool_tasks()


@pytest.mark.parametrize("mode", MODES)
async def test_stateless_results_in_the_next_request(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    async with client:
        first = [e async for e in client.events(MODEL, prompt=ASK, tools=[WEATHER])]
        (call,) = calls_of(first)
        messages = [
            {"role": "user", "content": ASK},
            assistant_message(first),
            {"role": "tool", "tool_call_id": call.call.id, "content": "sunny, 21 C"},
        ]
        result = await client.complete(MODEL, messages, tools=[WEATHER])
    assert result.text == expected_tool_reply("get_weather", "sunny, 21 C")
    assert result.stop_reason == "stop" and result.tool_calls == ()
    run = emu.runs[-1]
    assert run.tool_calls == []  # answered from the history, no new call
    assert [(r.tool_call_id, r.source) for r in run.tool_results] == [(call.call.id, "history")]
    # The exchange travels in the rebuilt root prompt messages (live-dialect.md row 3), after the
    # user message; the action's own user message is empty (a continuation).
    action = run.run_request.action.user_message_action  # type: ignore[union-attr]
    assert action.user_message.text == ""
    assert not action.HasField("trailing_conversation_history")
    assert [m.role for m in run.prompt_messages] == ["user", "assistant", "tool"]
    assert run.prompt_messages[0].text == ASK
    assert run.prompt_messages[1].tool_calls == ((call.call.id, "get_weather", {"city": "Oslo"}),)
    (res,) = run.prompt_messages[2].tool_results
    assert (res.tool_call_id, res.name, res.text) == (call.call.id, "get_weather", "sunny, 21 C")


@pytest.mark.parametrize("mode", MODES)
async def test_stateless_parallel_calls(emu: Emulator, mode: str) -> None:
    emu.behaviour.tool_calls = [
        ToolCallScript("get_weather", {"city": "Oslo"}),
        ToolCallScript("get_time", {"tz": "CET"}),
    ]
    client, _ = make_client(emu, mode)
    async with client:
        result = await client.complete(MODEL, prompt="weather and time please", tools=[WEATHER, TIME])
        assert result.stop_reason == "tool_calls"
        assert [(c.name, c.parsed_arguments()) for c in result.tool_calls] == [
            ("get_weather", {"city": "Oslo"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert len({c.id for c in result.tool_calls}) == 2
        events = [e async for e in client.events(MODEL, prompt="weather and time", tools=[WEATHER, TIME])]
        assert [c.index for c in calls_of(events)] == [0, 1]
        first_deltas = [e for e in events if isinstance(e, ToolCallDelta) and e.id is not None]
        assert [(d.index, d.name) for d in first_deltas] == [(0, "get_weather"), (1, "get_time")]
        msgs = [
            {"role": "user", "content": "weather and time"},
            assistant_message(events),
            *[
                {"role": "tool", "tool_call_id": c.call.id, "content": text}
                for c, text in zip(calls_of(events), ["rain", "12:00"], strict=True)
            ],
        ]
        final = await client.complete(MODEL, msgs, tools=[WEATHER, TIME])
    assert final.text == expected_tools_reply([("get_weather", "rain"), ("get_time", "12:00")])


@pytest.mark.parametrize("mode", MODES)
async def test_stateless_two_rounds(emu: Emulator, mode: str) -> None:
    emu.behaviour.tool_calls = tool_rounds(
        [ToolCallScript("get_weather", {"city": "Oslo"})], [ToolCallScript("get_time", {"tz": "CET"})]
    )
    client, _ = make_client(emu, mode)
    async with client:
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "plan my day"}]
        answers = iter(["snow", "09:30"])
        for expected in ("get_weather", "get_time"):
            events = [e async for e in client.events(MODEL, msgs, tools=[WEATHER, TIME])]
            (call,) = calls_of(events)
            assert call.call.name == expected and isinstance(events[-1], TurnEnd)
            assert events[-1].stop_reason == "tool_calls"
            msgs += [
                assistant_message(events),
                {"role": "tool", "tool_call_id": call.call.id, "content": next(answers)},
            ]
        final = await client.complete(MODEL, msgs, tools=[WEATHER, TIME])
    assert final.text == expected_tools_reply([("get_weather", "snow"), ("get_time", "09:30")])


# ---------------------------------------------------------------------------------------------
# stateful (tool_handler)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_stateful_handler_answers_inside_the_turn(emu: Emulator, mode: str) -> None:
    seen: list[dict[str, Any]] = []

    async def get_weather(call: ToolCall) -> str:
        args = call.parsed_arguments()
        seen.append(args)
        return f"sunny in {args['city']}"

    client, _ = make_client(emu, mode)
    async with client:
        events = [
            e async for e in client.events(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=get_weather)
        ]
        result = await client.complete(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=get_weather)
    assert seen == [{"city": "Oslo"}, {"city": "Oslo"}]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == expected_tool_reply("get_weather", "sunny in Oslo")
    (call,) = calls_of(events)
    assert call.handled and not call.emulated
    assert isinstance(events[-1], TurnEnd) and events[-1].stop_reason == "stop"
    assert result.text == expected_tool_reply("get_weather", "sunny in Oslo")
    assert result.tool_calls == () and result.stop_reason == "stop" and not result.usage.estimated
    rec = emu.runs[-1].tool_calls[0]
    assert rec.outcome == "result" and rec.stream_closed and emu.runs[-1].outcome == "completed"
    assert no_tool_tasks()


@pytest.mark.parametrize("mode", MODES)
async def test_stateful_parallel_calls_run_concurrently(emu: Emulator, mode: str) -> None:
    emu.behaviour.tool_calls = [
        ToolCallScript("get_weather", {"city": "Oslo"}),
        ToolCallScript("get_time", {"tz": "CET"}),
    ]
    started: list[str] = []
    both = asyncio.Event()

    async def handler(call: ToolCall) -> str:
        started.append(call.name)
        if len(started) == 2:
            both.set()
        # Each call waits for the other: only concurrent handlers get past this.
        await asyncio.wait_for(both.wait(), 5)
        return "rain" if call.name == "get_weather" else "12:00"

    client, _ = make_client(emu, mode)
    async with client:
        result = await client.complete(MODEL, prompt="both", tools=[WEATHER, TIME], tool_handler=handler)
    assert sorted(started) == ["get_time", "get_weather"]
    assert result.text == expected_tools_reply([("get_weather", "rain"), ("get_time", "12:00")])


@pytest.mark.parametrize("mode", MODES)
async def test_stateful_two_rounds(emu: Emulator, mode: str) -> None:
    emu.behaviour.tool_calls = tool_rounds(
        [ToolCallScript("get_weather", {"city": "Bergen"})], [ToolCallScript("get_time", {"tz": "UTC"})]
    )
    order: list[str] = []

    async def handler(call: ToolCall) -> str:
        order.append(call.name)
        return f"{call.name}-result-{len(order)}"

    client, _ = make_client(emu, mode)
    async with client:
        events = [
            e async for e in client.events(MODEL, prompt="go", tools=[WEATHER, TIME], tool_handler=handler)
        ]
    assert order == ["get_weather", "get_time"]
    assert [c.index for c in calls_of(events)] == [0, 1]  # indexes stay unique within the turn
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == expected_tools_reply(
        [("get_weather", "get_weather-result-1"), ("get_time", "get_time-result-2")]
    )


@pytest.mark.parametrize("mode", MODES)
async def test_handler_raising_is_an_error_result(emu: Emulator, mode: str) -> None:
    async def broken(call: ToolCall) -> str:
        raise RuntimeError(f"backend down (key {emu.api_key})")

    client, _ = make_client(emu, mode)
    async with client:
        result = await client.complete(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=broken)
    rec = emu.runs[-1].tool_calls[0]
    assert rec.outcome == "result" and rec.result is not None and rec.result.success.is_error
    assert emu.api_key not in rec.result_text and "[REDACTED]" in rec.result_text
    assert rec.result_text.startswith("error: RuntimeError: backend down")
    assert result.text == expected_tool_reply("get_weather", rec.result_text)


@pytest.mark.parametrize("mode", MODES)
async def test_handler_timeout_cancels_the_run(emu: Emulator, mode: str) -> None:
    cancelled = asyncio.Event()

    async def slow(call: ToolCall) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    client, _ = make_client(emu, mode, tool_result_timeout_s=0.3)
    async with client:
        with pytest.raises(ToolResultTimeoutError) as info:
            await client.complete(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=slow)
        assert info.value.details["tool_name"] == "get_weather" and info.value.code == "tool_result_timeout"
        assert cancelled.is_set() and no_tool_tasks() and client.active_requests == 0
        for _ in range(50):
            if emu.runs[-1].finished:
                break
            await asyncio.sleep(0.05)
        # Dropped at once like the SDK's run.cancel() (live-dialect.md row 11).
        assert emu.runs[-1].outcome == "disconnected"
        # The transport is still usable afterwards.
        assert await client.generate(MODEL, "hi") == expected_reply("hi")


@pytest.mark.parametrize("mode", MODES)
async def test_exec_heartbeats_while_a_slow_tool_runs(emu: Emulator, mode: str) -> None:
    async def slowish(call: ToolCall) -> str:
        await asyncio.sleep(0.5)
        return "done"

    client, transport = make_client(emu, mode)
    transport.exec_heartbeat_s = 0.1
    async with client:
        result = await client.complete(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=slowish)
    assert result.text == expected_tool_reply("get_weather", "done")
    assert emu.runs[-1].tool_calls[0].exec_heartbeats >= 2


# ---------------------------------------------------------------------------------------------
# tool_choice (constrained prompting: the run request has no tool_choice field)
# ---------------------------------------------------------------------------------------------
async def test_tool_choice_none_offers_no_tools(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    async with client:
        result = await client.complete(MODEL, prompt=ASK, tools=[WEATHER], tool_choice="none")
    assert result.text == expected_reply(ASK) and result.stop_reason == "stop"
    assert emu.runs[-1].tools_offered == [] and emu.runs[-1].tool_calls == []


async def test_tool_choice_required(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    async with client:
        auto = await client.complete(MODEL, prompt="Hello there", tools=[TIME])
        required = await client.complete(MODEL, prompt="Hello there", tools=[TIME], tool_choice="required")
    assert auto.stop_reason == "stop" and auto.tool_calls == ()
    assert required.stop_reason == "tool_calls" and [c.name for c in required.tool_calls] == ["get_time"]
    assert "MUST call at least one" in " ".join(emu.runs[-1].system_texts)


async def test_tool_choice_named_offers_only_that_tool(emu: Emulator) -> None:
    client, _ = make_client(emu, "always")
    named = {"type": "function", "function": {"name": "get_time"}}
    async with client:
        result = await client.complete(MODEL, prompt=ASK, tools=[WEATHER, TIME], tool_choice=named)
    assert [c.name for c in result.tool_calls] == ["get_time"]
    assert emu.runs[-1].tools_offered == ["get_time"] and "get_time" in " ".join(emu.runs[-1].system_texts)


async def test_tool_choice_required_gets_one_repair_round(emu: Emulator) -> None:
    runs: list[int] = []

    def script(ctx: Any) -> list[ToolCallScript]:
        runs.append(ctx.round)
        return [ToolCallScript("get_time", {"tz": "CET"})] if len(runs) == 2 else []

    emu.behaviour.tool_calls = script
    client, _ = make_client(emu, "never")
    async with client:
        result = await client.complete(MODEL, prompt="Hello", tools=[TIME], tool_choice="required")
    assert len(emu.runs) == 2 and [c.name for c in result.tool_calls] == ["get_time"]
    repair_text = emu.runs[-1].run_request.action.user_message_action.user_message.text  # type: ignore[union-attr]
    assert "did not call a tool" in repair_text


async def test_tool_choice_required_not_honoured_returns_the_text(emu: Emulator) -> None:
    emu.behaviour.tool_calls = lambda ctx: []
    client, _ = make_client(emu, "never")
    async with client:
        result = await client.complete(MODEL, prompt="Hello", tools=[TIME], tool_choice="get_time")
    assert len(emu.runs) == 2 and result.tool_calls == () and result.stop_reason == "stop"
    assert result.text.startswith("Emulated reply to:")


# ---------------------------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_session_with_tool_handler(emu: Emulator, mode: str) -> None:
    async def handler(call: ToolCall) -> str:
        return "cloudy in " + str(call.parsed_arguments()["city"])

    client, _ = make_client(emu, mode)
    async with client, client.session(MODEL) as session:
        first = await session.prompt(ASK, tools=[WEATHER], tool_handler=handler)
        assert first.text == expected_tool_reply("get_weather", "cloudy in Oslo")
        assert first.session_id == session.session_id and session.turn_count == 1
        second = await session.prompt("thanks")
        assert session.turn_count == 2
    assert second.text == expected_reply("thanks", earlier=2, first=ASK, turns=1)
    assert emu.runs[-1].run_request.conversation_id == emu.runs[-2].run_request.conversation_id  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_stopping_during_a_handler_cancels_it_and_the_run(emu: Emulator, mode: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(call: ToolCall) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    client, _ = make_client(emu, mode)
    async with client:
        stream = client.events(MODEL, prompt=ASK, tools=[WEATHER], tool_handler=handler)
        async for event in stream:
            if isinstance(event, ToolCallEvent):
                await asyncio.wait_for(started.wait(), 5)
                break
        await stream.aclose()
        assert cancelled.is_set() and no_tool_tasks() and client.active_requests == 0
        for _ in range(50):
            if emu.runs[-1].finished:
                break
            await asyncio.sleep(0.05)
        assert emu.runs[-1].outcome == "disconnected"  # dropped at once (live-dialect.md row 11)
