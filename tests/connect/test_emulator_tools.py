"""Tool calling in the emulator (issue 7): models that call the caller's tools through Cursor's MCP
exec channel (connect.md §6.1), driven RAW (RunSSE + BidiAppend and h2c Run) with the minimal
tool-answering client of ``cursorpipe.testing.emulator.raw``, plus Cursor's official SDK as the peer.

The wire under test: ``AgentRunRequest.mcp_tools`` offers ``McpToolDefinition``s; the model streams
``partial_tool_call`` (args JSON deltas) and ``tool_call_started``, sends ``exec_server_message{id,
mcp_args}``, waits (bounded) for ``exec_client_message{id, mcp_result}`` + ``stream_close{id}``, sends
``tool_call_completed`` and answers with text that depends on the result.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cursorpipe._codecs.connect import ConnectError, decode_error_details
from cursorpipe._proto.agent.v1 import agent_pb2
from cursorpipe.errors import NetworkError
from cursorpipe.testing.emulator import (
    CUSTOM_TOOLS_PROVIDER,
    Behaviour,
    Emulator,
    ToolCallScript,
    ToolContext,
    ToolResult,
    default_tool_arguments,
    default_tool_calls,
    expected_reply,
    expected_tool_reply,
    expected_tools_reply,
    history_assistant_tool_calls,
    history_tool_result,
    mcp_result_text,
    mcp_tool_definition,
    tool_rounds,
)
from cursorpipe.testing.emulator._turn import RunRecord, TurnIO, run_turn
from cursorpipe.testing.emulator.raw import build_run_request, raw_turn_h2, raw_turn_sse
from cursorpipe.transports.connect._errors import map_connect_error
from hypothesis import given, settings
from hypothesis import strategies as st

RAW = pytest.mark.parametrize("raw_turn", [raw_turn_sse, raw_turn_h2], ids=["runsse", "run-h2c"])

WEATHER = mcp_tool_definition(
    "get_weather",
    "Get the weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = mcp_tool_definition(
    "get_time",
    "Current local time in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
MAGIC = mcp_tool_definition(
    "magic_function",
    "Apply a magic function to an input.",
    {
        "type": "object",
        "properties": {"input": {"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": 1000}},
        "required": ["input"],
    },
)


def weather(args: dict[str, Any]) -> str:
    return f"sunny, 21 C in {args['city']}"


def clock(args: dict[str, Any]) -> str:
    return f"14:05 in {args['city']}"


HANDLERS = {"get_weather": weather, "get_time": clock}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(Behaviour(chunks=3)) as e:
        yield e


def _server_cases(turn: Any) -> list[str]:
    out = []
    for m in turn.server_messages:
        case = m.WhichOneof("message")
        if case == "interaction_update":
            case = m.interaction_update.WhichOneof("message")
        elif case == "exec_server_message":
            case = m.exec_server_message.WhichOneof("message")
        out.append(case)
    return out


# -- the stateful round trip ------------------------------------------------------------------


@RAW
async def test_scripted_call_round_trip(emu: Emulator, raw_turn: Any) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"}, call_id="call_w1")]
    turn = await raw_turn(emu.url, emu.api_key, "weather?", tools=[WEATHER], tool_handlers=HANDLERS)
    # the answer depends on what the client's tool returned
    assert turn.text == expected_tool_reply("get_weather", "sunny, 21 C in Oslo")
    assert turn.turn_ended and turn.end is not None and turn.end.error is None

    (args,) = turn.tool_calls
    assert args.name == "custom-user-tools-get_weather"
    assert args.tool_name == "get_weather"
    assert args.provider_identifier == CUSTOM_TOOLS_PROVIDER
    assert args.tool_call_id == "call_w1"
    assert args.args["city"].string_value == "Oslo"
    # the argument deltas spell the arguments' JSON, keyed by the call id
    assert json.loads(turn.tool_args_text["call_w1"]) == {"city": "Oslo"}

    cases = _server_cases(turn)
    first_partial = cases.index("partial_tool_call")
    started = cases.index("tool_call_started")
    mcp = cases.index("mcp_args")
    completed = cases.index("tool_call_completed")
    assert first_partial < started < mcp < completed < cases.index("text_delta")
    assert cases.count("partial_tool_call") == 3
    updates = {u.WhichOneof("message"): u for u in turn.tool_updates}
    assert (
        updates["partial_tool_call"].partial_tool_call.tool_call.mcp_tool_call.args.tool_name == "get_weather"
    )
    start = updates["tool_call_started"].tool_call_started
    assert start.call_id == "call_w1" and start.tool_call.tool_call_id == "call_w1"
    assert start.tool_call.mcp_tool_call.args.args["city"].string_value == "Oslo"
    done = updates["tool_call_completed"].tool_call_completed.tool_call
    assert done.mcp_tool_call.result.success.content[0].text.text == "sunny, 21 C in Oslo"
    assert done.completed_at_ms > 0 and start.tool_call.started_at_ms > 0

    run = emu.runs[-1]
    assert run.outcome == "completed"
    assert run.tools_offered == ["get_weather"]
    (rec,) = run.tool_calls
    assert (rec.name, rec.arguments, rec.outcome, rec.offered) == (
        "get_weather",
        {"city": "Oslo"},
        "result",
        True,
    )
    assert rec.stream_closed and rec.result is not None and rec.result_text == "sunny, 21 C in Oslo"
    assert run.tool_results == [ToolResult("call_w1", "get_weather", "sunny, 21 C in Oslo", False, "exec")]
    # the client's answer: mcp_result then stream_close, for the exec's id
    answers = [m for m in run.exec_answers if m.exec_client_message.id == rec.exec_id]
    assert answers and answers[0].exec_client_message.WhichOneof("message") == "mcp_result"
    assert any(
        m.exec_client_control_message.stream_close.id == rec.exec_id
        for m in run.exec_answers
        if m.exec_client_control_message.WhichOneof("message") == "stream_close"
    )
    # one request-context exec per turn plus one per tool call (connect.md §6.1 [S CC])
    assert cases.count("request_context_args") == 2
    # usage counts the call's arguments as output
    assert run.usage["output_tokens"] > 0 and turn.usage == run.usage


async def test_reply_really_depends_on_the_result(emu: Emulator) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"})]
    a = await raw_turn_sse(
        emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers={"get_weather": lambda _: "rain"}
    )
    b = await raw_turn_sse(
        emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers={"get_weather": lambda _: "snow"}
    )
    assert a.text == expected_tool_reply("get_weather", "rain")
    assert b.text == expected_tool_reply("get_weather", "snow")
    assert a.text != b.text


@RAW
async def test_default_rule_calls_the_named_tool_with_arguments_from_the_prompt(
    emu: Emulator, raw_turn: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def magic(args: dict[str, Any]) -> str:
        seen.append(args)
        return str(int(args["input"]) + 2)

    turn = await raw_turn(
        emu.url,
        emu.api_key,
        "What is the value of magic_function(3)? Use the tool.",
        tools=[MAGIC, WEATHER],
        tool_handlers={"magic_function": magic, **HANDLERS},
    )
    assert seen == [{"input": 3}]
    assert turn.text == expected_tool_reply("magic_function", "5")
    assert json.loads(next(iter(turn.tool_args_text.values()))) == {"input": 3}
    assert [c.name for c in emu.runs[-1].tool_calls] == ["magic_function"]


async def test_default_rule_no_tool_for_an_unrelated_prompt(emu: Emulator) -> None:
    turn = await raw_turn_sse(emu.url, emu.api_key, "hello there", tools=[WEATHER], tool_handlers=HANDLERS)
    assert turn.text == expected_reply("hello there", tools=["get_weather"], mode="agent")
    assert turn.tool_calls == [] and emu.runs[-1].tool_calls == []
    assert emu.runs[-1].tools_offered == ["get_weather"]


async def test_without_offered_tools_a_script_calls_nothing(emu: Emulator) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"})]
    turn = await raw_turn_sse(emu.url, emu.api_key, "weather in Oslo?")
    assert turn.text == expected_reply("weather in Oslo?")
    assert emu.runs[-1].tool_calls == [] and emu.runs[-1].tools_offered == []


# -- parallel calls and rounds ----------------------------------------------------------------


@RAW
async def test_parallel_calls_in_one_round(emu: Emulator, raw_turn: Any) -> None:
    emu.behaviour.tool_calls = [
        ToolCallScript("get_weather", {"city": "Oslo"}),
        ToolCallScript("get_time", {"city": "Lima"}),
    ]
    turn = await raw_turn(emu.url, emu.api_key, "both", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS)
    assert turn.text == expected_tools_reply(
        [("get_weather", "sunny, 21 C in Oslo"), ("get_time", "14:05 in Lima")]
    )
    cases = _server_cases(turn)
    mcp_positions = [i for i, c in enumerate(cases) if c == "mcp_args"]
    assert len(mcp_positions) == 2
    # both execs go out before the first call is completed
    assert max(mcp_positions) < cases.index("tool_call_completed")
    run = emu.runs[-1]
    ids = {c.call_id for c in run.tool_calls}
    assert len(ids) == 2 and {a.tool_call_id for a in turn.tool_calls} == ids
    assert [c.round for c in run.tool_calls] == [1, 1]
    assert [r.name for r in run.tool_results] == ["get_weather", "get_time"]


async def test_all_execs_are_sent_before_any_answer_is_awaited(emu: Emulator) -> None:
    emu.behaviour.tool_calls = [
        ToolCallScript("get_weather", {"city": "A"}),
        ToolCallScript("get_time", {"city": "B"}),
    ]
    emu.behaviour.tool_result_timeout_s = 0.4
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "x", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS, answer_tools=False
    )
    # nobody answered, yet both calls reached the client
    assert [a.tool_name for a in turn.tool_calls] == ["get_weather", "get_time"]
    assert turn.end is not None and turn.end.error is not None


@RAW
async def test_second_round_uses_the_first_result(emu: Emulator, raw_turn: Any) -> None:
    def script(ctx: ToolContext) -> list[ToolCallScript]:
        if ctx.round == 1:
            return [ToolCallScript("get_weather", {"city": "Oslo"})]
        if ctx.round == 2:
            return [ToolCallScript("get_time", {"city": ctx.results[-1].text})]
        return []

    emu.behaviour.tool_calls = script
    turn = await raw_turn(emu.url, emu.api_key, "plan", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS)
    first = "sunny, 21 C in Oslo"
    assert [a.tool_name for a in turn.tool_calls] == ["get_weather", "get_time"]
    assert turn.tool_calls[1].args["city"].string_value == first
    assert turn.text == expected_tools_reply([("get_weather", first), ("get_time", f"14:05 in {first}")])
    assert [c.round for c in emu.runs[-1].tool_calls] == [1, 2]


async def test_tool_rounds_helper_and_reply_callable(emu: Emulator) -> None:
    emu.behaviour.tool_calls = tool_rounds(
        [ToolCallScript("get_weather", {"city": "Oslo"})], [ToolCallScript("get_time", {"city": "Rome"})]
    )
    emu.behaviour.reply = lambda ctx: " | ".join(r.text for r in ctx.tool_results)
    emu.behaviour.tool_preamble = "Let me check. "
    turn = await raw_turn_h2(emu.url, emu.api_key, "x", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS)
    assert turn.text == "Let me check. sunny, 21 C in Oslo | 14:05 in Rome"
    assert len(turn.tool_calls) == 2


async def test_max_tool_rounds_bounds_a_looping_script(emu: Emulator) -> None:
    emu.behaviour.tool_calls = lambda ctx: [ToolCallScript("get_weather", {"city": str(ctx.round)})]
    emu.behaviour.max_tool_rounds = 3
    turn = await raw_turn_sse(emu.url, emu.api_key, "loop", tools=[WEATHER], tool_handlers=HANDLERS)
    assert [a.args["city"].string_value for a in turn.tool_calls] == ["1", "2", "3"]
    assert turn.turn_ended


# -- lost results, errors, unknown tools ------------------------------------------------------


@RAW
async def test_a_result_that_never_comes_ends_the_turn_with_a_clear_error(
    emu: Emulator, raw_turn: Any
) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"}, call_id="call_lost")]
    emu.behaviour.tool_result_timeout_s = 0.3
    turn = await raw_turn(
        emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers=HANDLERS, answer_tools=False
    )
    assert not turn.turn_ended and turn.text == ""
    assert turn.end is not None and turn.end.error is not None
    err = turn.end.error
    assert err.code == "deadline_exceeded"
    assert "call_lost" in err.message and "get_weather" in err.message and "0.3 s" in err.message
    info = decode_error_details(err.details)
    assert info is not None and info.name == "TIMEOUT"
    assert isinstance(map_connect_error(err), NetworkError)
    run = emu.runs[-1]
    (rec,) = run.tool_calls
    assert rec.outcome == "timeout" and run.outcome == "error:deadline_exceeded"
    # the pending exec was aborted before the error (exec_server_control_message.abort)
    assert turn.aborted_execs == [rec.exec_id]


async def test_unknown_scripted_tool_is_called_and_tool_not_found_flows_back(emu: Emulator) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("delete_everything", {})]
    turn = await raw_turn_sse(emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers=HANDLERS)
    (args,) = turn.tool_calls
    assert args.name == "delete_everything" and args.provider_identifier == ""
    assert turn.text == expected_tool_reply("delete_everything", "tool not found: delete_everything")
    (rec,) = emu.runs[-1].tool_calls
    assert rec.offered is False and rec.outcome == "result"
    assert rec.result is not None and list(rec.result.tool_not_found.available_tools) == [
        "get_time",
        "get_weather",
    ]


async def test_default_rule_never_calls_an_unknown_tool(emu: Emulator) -> None:
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "use the tool launch_rockets now", tools=[WEATHER], tool_handlers=HANDLERS
    )
    assert turn.tool_calls == []
    assert turn.text == expected_reply("use the tool launch_rockets now", tools=["get_weather"], mode="agent")


async def test_throw_and_failing_tool_become_error_results(emu: Emulator) -> None:
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"})]

    def broken(_: dict[str, Any]) -> str:
        raise ValueError("station offline")

    turn = await raw_turn_sse(
        emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers={"get_weather": broken}
    )
    assert turn.text == expected_tool_reply("get_weather", "error: ValueError: station offline")
    assert emu.runs[-1].tool_results[0].is_error
    # tool_handlers=None: the raw client declines the exec with throw + stream_close
    turn = await raw_turn_sse(emu.url, emu.api_key, "x", tools=[WEATHER])
    assert turn.text == expected_tool_reply("get_weather", "error: not supported by the raw client")
    assert emu.runs[-1].tool_calls[0].outcome == "throw"
    done = [u for u in turn.tool_updates if u.WhichOneof("message") == "tool_call_completed"]
    assert (
        done[0].tool_call_completed.tool_call.mcp_tool_call.result.error.error
        == "not supported by the raw client"
    )


# -- stateless exchange -----------------------------------------------------------------------


def _call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool-call", "toolCallId": call_id, "toolName": name, "args": args}


def _result(call_id: str, name: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "tool-result", "toolCallId": call_id, "toolName": name, "result": text, **extra}


@RAW
async def test_stateless_tool_exchange_in_root_prompt_messages(emu: Emulator, raw_turn: Any) -> None:
    """live-dialect.md row 3: the tool calls and results travel in the rebuilt prompt messages; the
    current user message repeats the question the exchange answers."""
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [_call("call_a", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "content": [_result("call_a", "get_weather", "cloudy, 12 C")]},
    ]
    turn = await raw_turn(
        emu.url,
        emu.api_key,
        "weather in Oslo?",
        tools=[WEATHER],
        tool_handlers=HANDLERS,
        prompt_messages=messages,
    )
    assert turn.text == expected_tool_reply("get_weather", "cloudy, 12 C")
    assert turn.tool_calls == [] and "mcp_args" not in _server_cases(turn)
    run = emu.runs[-1]
    assert run.tool_calls == []
    assert run.tool_results == [ToolResult("call_a", "get_weather", "cloudy, 12 C", False, "history")]
    assert ("tool", "cloudy, 12 C") in run.history


async def test_the_same_exchange_in_trailing_history_is_lost_unless_switched_on() -> None:
    """The old variant (trailing_conversation_history) is not read by the live service: the model
    calls the tool again. Behaviour.read_conversation_history brings the old reading back."""
    trailing = [
        history_assistant_tool_calls([("call_a", "get_weather", {"city": "Oslo"})]),
        history_tool_result("call_a", "get_weather", "cloudy, 12 C"),
    ]
    async with Emulator() as emu:
        turn = await raw_turn_sse(
            emu.url,
            emu.api_key,
            "weather in Oslo?",
            tools=[WEATHER],
            tool_handlers=HANDLERS,
            trailing_history=trailing,
        )
    assert [a.tool_name for a in turn.tool_calls] == ["get_weather"]  # called again: the result was lost
    assert turn.text == expected_tool_reply("get_weather", "sunny, 21 C in Oslo")
    async with Emulator(Behaviour(read_conversation_history=True)) as emu:
        turn = await raw_turn_sse(
            emu.url,
            emu.api_key,
            "weather in Oslo?",
            tools=[WEATHER],
            tool_handlers=HANDLERS,
            trailing_history=trailing,
        )
        history = emu.runs[-1].history
    assert turn.tool_calls == []
    assert turn.text == expected_tool_reply("get_weather", "cloudy, 12 C")
    # the model saw the exchange, not the current message, as earlier messages
    assert history == (("assistant", ""), ("tool", "cloudy, 12 C"))


async def test_stateless_results_with_an_empty_user_message(emu: Emulator) -> None:
    messages = [
        {"role": "user", "content": "What is the weather in Oslo and the time in Lima?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                _call("c1", "get_weather", {"city": "Oslo"}),
                _call("c2", "get_time", {"city": "Lima"}),
            ],
        },
        {"role": "tool", "content": [_result("c1", "", "rain")]},  # the name comes from the call
        {"role": "tool", "content": [_result("c2", "get_time", "no clock", isError=True)]},
    ]
    turn = await raw_turn_h2(
        emu.url, emu.api_key, "", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert turn.text == expected_tools_reply([("get_weather", "rain"), ("get_time", "error: no clock")])
    assert turn.tool_calls == []


async def test_openai_shaped_prompt_messages_are_read_too(emu: Emulator) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "hail"},
    ]
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "", tools=[WEATHER], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert turn.text == expected_tool_reply("get_weather", "hail")


async def test_a_new_user_message_after_a_tool_exchange_is_a_new_question(emu: Emulator) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [_call("c1", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "content": [_result("c1", "get_weather", "rain")]},
        {"role": "assistant", "content": "It rains in Oslo."},
    ]
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "thanks!", tools=[WEATHER], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert turn.text == expected_reply(
        "thanks!", earlier=4, first="weather?", tools=["get_weather"], mode="agent"
    )
    assert emu.runs[-1].tool_results == []


async def test_stateless_history_can_lead_to_a_scripted_second_round(emu: Emulator) -> None:
    emu.behaviour.tool_calls = tool_rounds(
        [ToolCallScript("get_weather", {"city": "Oslo"})], [ToolCallScript("get_time", {"city": "Oslo"})]
    )
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [_call("c1", "get_weather", {"city": "Oslo"})]},
        {"role": "tool", "content": [_result("c1", "get_weather", "rain")]},
    ]
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "x", tools=[WEATHER, CLOCK], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert [a.tool_name for a in turn.tool_calls] == ["get_time"]
    assert turn.text == expected_tools_reply([("get_weather", "rain"), ("get_time", "14:05 in Oslo")])


# -- the turn engine directly: exec heartbeats, a wrong answer --------------------------------


class _Peer:
    """Drives run_turn in-process: a client that answers KV and request-context itself and lets
    the test decide what to do with the mcp exec."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.out: asyncio.Queue[agent_pb2.AgentServerMessage] = asyncio.Queue()
        self.end: list[ConnectError | None] = []
        self.io = TurnIO(send=self._send, end=self._end, inbound=asyncio.Queue())
        self.record = RunRecord(transport="test", request_id="r", headers={})
        self.behaviour = behaviour
        self.mcp: asyncio.Queue[agent_pb2.ExecServerMessage] = asyncio.Queue()

    async def _send(self, msg: agent_pb2.AgentServerMessage) -> None:
        await self.out.put(msg)

    async def _end(self, error: ConnectError | None, metadata: Any) -> None:
        self.end.append(error)

    def put(self, msg: agent_pb2.AgentClientMessage) -> None:
        self.io.inbound.put_nowait(msg)

    async def pump(self) -> None:
        """Answer KV and request-context like a client; hand mcp execs to ``self.mcp``."""
        while True:
            msg = await self.out.get()
            case = msg.WhichOneof("message")
            if case == "kv_server_message":
                kv = msg.kv_server_message
                reply = agent_pb2.AgentClientMessage()
                reply.kv_client_message.id = kv.id
                if kv.WhichOneof("message") == "set_blob_args":
                    reply.kv_client_message.set_blob_result.SetInParent()
                else:
                    reply.kv_client_message.get_blob_result.SetInParent()
                self.put(reply)
            elif case == "exec_server_message":
                ex = msg.exec_server_message
                if ex.WhichOneof("message") == "mcp_args":
                    await self.mcp.put(ex)
                    continue
                reply = agent_pb2.AgentClientMessage()
                reply.exec_client_message.id = ex.id
                if ex.WhichOneof("message") == "mcp_state_exec_args":
                    server = reply.exec_client_message.mcp_state_exec_result.success.servers.add()
                    server.status = "connected"
                    server.tools.append(WEATHER)
                else:
                    reply.exec_client_message.request_context_result.success.SetInParent()
                self.put(reply)
                self.close(ex.id)

    async def until_mcp(self) -> agent_pb2.ExecServerMessage:
        return await asyncio.wait_for(self.mcp.get(), 5)

    def close(self, eid: int) -> None:
        msg = agent_pb2.AgentClientMessage()
        msg.exec_client_control_message.stream_close.id = eid
        self.put(msg)

    def start(self) -> asyncio.Task[None]:
        first = build_run_request("x", tools=[WEATHER])
        self.put(first)
        self.pumping = asyncio.create_task(self.pump())
        return asyncio.create_task(
            run_turn(
                self.io,
                self.behaviour,
                self.record,
                fault=None,
                pending_texts={},
                known_models=lambda _: True,
            )
        )


async def test_exec_heartbeats_keep_a_slow_tool_alive() -> None:
    peer = _Peer(
        Behaviour(tool_calls=[ToolCallScript("get_weather", {"city": "Oslo"})], tool_result_timeout_s=0.3)
    )
    task = peer.start()
    ex = await peer.until_mcp()
    for _ in range(5):  # 0.75 s of work, well past the 0.3 s limit, heartbeating every 0.15 s
        await asyncio.sleep(0.15)
        hb = agent_pb2.AgentClientMessage()
        hb.exec_client_control_message.heartbeat.id = ex.id
        peer.put(hb)
    res = agent_pb2.AgentClientMessage()
    res.exec_client_message.id = ex.id
    res.exec_client_message.mcp_result.success.content.add().text.text = "slow but fine"
    peer.put(res)
    peer.close(ex.id)
    await asyncio.wait_for(task, 5)
    peer.pumping.cancel()
    assert peer.end == [None]
    assert peer.record.outcome == "completed"
    assert peer.record.reply == expected_tool_reply("get_weather", "slow but fine")
    assert peer.record.tool_calls[0].exec_heartbeats == 5


async def test_an_answer_of_the_wrong_kind_is_an_invalid_argument_error() -> None:
    peer = _Peer(Behaviour(tool_calls=[ToolCallScript("get_weather", {"city": "Oslo"})]))
    task = peer.start()
    ex = await peer.until_mcp()
    wrong = agent_pb2.AgentClientMessage()
    wrong.exec_client_message.id = ex.id
    wrong.exec_client_message.request_context_result.success.SetInParent()
    peer.put(wrong)
    peer.close(ex.id)
    await asyncio.wait_for(task, 5)
    peer.pumping.cancel()
    (err,) = peer.end
    assert err is not None and err.code == "invalid_argument" and "expected mcp_result" in err.message
    assert peer.record.tool_calls[0].outcome == "invalid"


# -- the pure helpers -------------------------------------------------------------------------


def _tools(*defs: agent_pb2.McpToolDefinition) -> dict[str, agent_pb2.McpToolDefinition]:
    return {d.tool_name: d for d in defs}


@pytest.mark.parametrize(
    ("text", "hints", "expected"),
    [
        ("What is the weather in San Francisco, CA?", "", ["get_weather"]),
        ("get_time and get_weather please", "", ["get_time", "get_weather"]),
        ("Use the tool get_time. Also the weather.", "", ["get_time"]),
        ("call the get_weather tool", "", ["get_weather"]),
        ("Hello!", "tool_choice: required", ["get_weather"]),
        ("Hello!", "You must call one of the provided tools.", ["get_weather"]),
        ("Hello!", "tool_choice: get_time", ["get_time"]),
        ("What is the weather in Oslo?", "Do not call any tools.", []),
        ("What is the weather in Oslo?", "tool_choice: none", []),
        ("Hello!", "", []),
        ("use tool nonexistent", "", []),
    ],
)
def test_default_tool_calls(text: str, hints: str, expected: list[str]) -> None:
    calls = default_tool_calls(_tools(WEATHER, CLOCK), text, hints)
    assert [c.name for c in calls] == expected
    assert all(c.arguments is None for c in calls)


@pytest.mark.parametrize(
    ("schema", "text", "name", "expected"),
    [
        ({"properties": {"location": {"type": "string"}}, "required": ["location"]},
         "What is the weather in San Francisco, CA?", "get_weather", {"location": "San Francisco, CA"}),
        ({"properties": {"input": {"type": "integer", "exclusiveMinimum": -1000}}, "required": ["input"]},
         "What is the value of magic_function(3)? Use the tool.", "magic_function", {"input": 3}),
        ({"type": "object", "properties": {}}, "What is magic_function_no_args()?",
         "magic_function_no_args", {}),
        ({"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}, "add a=1 b=2", "adder",
         {"a": 1, "b": 2}),
        ({"properties": {"city": {"type": "string"}}}, 'lookup {"city": "Bergen"}', "lookup",
         {"city": "Bergen"}),
        ({"properties": {"unit": {"enum": ["C", "F"]}, "n": {"type": "integer", "minimum": 5},
                         "flag": {"type": "boolean"}, "tags": {"type": "array"},
                         "x": {"type": "number", "maximum": 1}},
          "required": ["unit", "n", "flag", "tags", "x"]},
         "nothing numeric here", "t", {"unit": "C", "n": 5, "flag": True, "tags": [], "x": 0.0}),
        ({"properties": {"style": {"type": "string"}}, "required": ["style"]},
         "Using the tool, generate a Pirate greeting.", "greeting_generator",
         {"style": "Using the tool, generate a Pirate greeting"}),
        ({"$defs": {"P": {"type": "object", "properties": {"q": {"type": "integer"}}}},
          "properties": {"p": {"$ref": "#/$defs/P"}}}, "q is 7", "t", {"p": {"q": 7}}),
    ],
)  # fmt: skip
def test_default_tool_arguments(
    schema: dict[str, Any], text: str, name: str, expected: dict[str, Any]
) -> None:
    assert default_tool_arguments(schema, text, name) == expected


def test_mcp_result_text_renders_every_case() -> None:
    r = agent_pb2.McpResult()
    r.success.content.add().text.text = "a"
    r.success.content.add().image.mime_type = "image/png"
    assert mcp_result_text(r) == ("a[image image/png]", False)
    r = agent_pb2.McpResult()
    r.success.structured_content.update({"k": 1})
    assert mcp_result_text(r) == ('{"k": 1.0}', False)
    r = agent_pb2.McpResult()
    r.success.is_error = True
    r.success.content.add().text.text = "bad"
    assert mcp_result_text(r) == ("error: bad", True)
    cases = {
        "error": ("error", "boom", "error: boom"),
        "rejected": ("reason", "no", "rejected: no"),
        "permission_denied": ("error", "ro", "permission denied: ro"),
        "tool_not_found": ("name", "t", "tool not found: t"),
        "server_not_found": ("name", "s", "server not found: s"),
    }
    for case, (fld, value, text) in cases.items():
        r = agent_pb2.McpResult()
        setattr(getattr(r, case), fld, value)
        assert mcp_result_text(r) == (text, True)
    r = agent_pb2.McpResult()
    r.approved.SetInParent()
    assert mcp_result_text(r) == ("approved", False)
    assert mcp_result_text(agent_pb2.McpResult()) == ("error: empty result", True)


def test_mcp_tool_definition_matches_the_official_sdk_shape() -> None:
    d = mcp_tool_definition("f", "does f", {"type": "object", "properties": {"x": {"type": "string"}}})
    assert (d.name, d.tool_name, d.provider_identifier, d.description) == (
        "custom-user-tools-f", "f", "custom-user-tools", "does f"
    )  # fmt: skip
    assert d.input_schema.struct_value.fields["type"].string_value == "object"
    assert not d.HasField("input_schema_json")
    assert mcp_tool_definition("f", schema_json=True).HasField("input_schema_json")


# -- Cursor's official SDK as the peer --------------------------------------------------------

_SDK_PLATFORM = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")

_SDK_DRIVER = r"""
import json, os, signal, sys

def _alarm(signum, frame):
    raise TimeoutError("SDK call took too long")

signal.signal(signal.SIGALRM, _alarm)
signal.alarm(60)
from cursor_sdk import AgentOptions, Client, LocalAgentOptions
from cursor_sdk.types import CustomTool

ws, prompt = sys.argv[1], sys.argv[2]
calls, tool_events = [], []

def get_weather(args, ctx):
    calls.append({"args": dict(args), "tool_call_id": ctx.tool_call_id})
    return "sunny in " + str(args.get("city"))

client = Client.launch_bridge(workspace=ws, state_root=os.path.join(os.environ["HOME"], "state"), timeout=40)
try:
    tool = CustomTool(
        execute=get_weather,
        description="Get the weather for a city.",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    agent = client.create_agent(AgentOptions(
        model="composer-2",
        api_key=os.environ["CURSOR_API_KEY"],
        local=LocalAgentOptions(cwd=ws, custom_tools={"get_weather": tool}),
    ))
    run = agent.send(prompt)
    for ev in run:
        m = ev.sdk_message
        if m is not None and getattr(m, "type", None) == "tool_call":
            tool_events.append({"call_id": m.call_id, "name": m.name, "status": m.status, "args": m.args})
    res = run.wait()
    print("RESULT " + json.dumps({"status": res.status, "result": res.result, "error": res.error_message,
                                  "calls": calls, "tool_events": tool_events}), flush=True)
finally:
    client.close()
"""


@pytest.mark.conformance
@pytest.mark.slow
async def test_official_sdk_custom_tool_round_trip(tmp_path: Path) -> None:
    """Cursor's own client offers a custom tool, receives the emulator's mcp_args exec, runs the
    Python callback and answers with mcp_result; the emulator's answer depends on that result."""
    import importlib.util

    if importlib.util.find_spec("cursor_sdk") is None:
        if _SDK_PLATFORM:
            pytest.fail("cursor-sdk is a declared dev dependency on this platform; run `python3 dev.py sync`")
        pytest.skip(f"cursor-sdk ships no wheel for {sys.platform}/{platform.machine()}")
    home, ws, tmp = tmp_path / "home", tmp_path / "ws", tmp_path / "tmp"
    for d in (home, ws, tmp):
        d.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(_SDK_DRIVER, encoding="utf-8")
    # The default rule picks the tool from the prompt; the discovery updates (ToolCall case 44, which
    # the SDK's schema knows) must decode cleanly in Cursor's own client.
    behaviour = Behaviour(tool_result_timeout_s=30, meta_tool_discovery=True)
    async with Emulator(behaviour) as emu:
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "CURSOR_BACKEND_URL": emu.url,
               "CURSOR_API_KEY": emu.api_key}  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(driver), str(ws), "What is the weather in Oslo?",
            cwd=str(ws), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = await proc.communicate()
            pytest.fail(f"the official SDK did not finish; stderr tail:\n{err.decode()[-2000:]}")
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
        runs = list(emu.runs)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"SDK driver failed:\n{err.decode()[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["status"] == "finished", result
    assert result["result"] == expected_tool_reply("get_weather", "sunny in Oslo")
    (run,) = runs
    (rec,) = run.tool_calls
    # the SDK called the Python function with the model's arguments and the call id
    assert result["calls"] == [{"args": {"city": "Oslo"}, "tool_call_id": rec.call_id}]
    # the SDK offers the tool exactly as mcp_tool_definition builds it
    (offered,) = run.run_request.mcp_tools.mcp_tools  # type: ignore[union-attr]
    expected_def = mcp_tool_definition("get_weather", "Get the weather for a city.", {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})  # fmt: skip
    assert (offered.name, offered.tool_name, offered.provider_identifier, offered.description) == (
        expected_def.name, expected_def.tool_name, expected_def.provider_identifier, expected_def.description
    )  # fmt: skip
    assert offered.input_schema == expected_def.input_schema
    assert rec.outcome == "result" and rec.stream_closed
    assert rec.result is not None and rec.result.success.content[0].text.text == "sunny in Oslo"
    # Why the strict tool rules accept Cursor's own client: it sends no allowed-tools header (its
    # default tool set includes MCP), no mode (not ASK), and answers mcp_state_exec_args with its
    # custom-tools server listing the tool but without a status (counted as connected).
    assert "x-cursor-agent-allowed-tools" not in run.headers and run.mode == "unspecified"
    assert run.mcp_state_answer is not None
    (server,) = run.mcp_state_answer.exec_client_message.mcp_state_exec_result.success.servers
    assert server.server_identifier == "custom-user-tools" and not server.HasField("status")
    assert [t.tool_name for t in server.tools] == ["get_weather"] and run.tools_visible == ["get_weather"]
    # the SDK understood the emulator's tool-call updates: running (partial, started), then completed
    events = result["tool_events"]
    assert {e["call_id"] for e in events} == {rec.call_id} and {e["name"] for e in events} == {"mcp"}
    assert events[-1]["status"] == "completed" and events[-1]["args"]["args"] == {"city": "Oslo"}
    assert events[-1]["args"]["toolName"] == "get_weather"


async def test_a_definition_with_only_a_wire_name_and_bad_schema_json_still_works(emu: Emulator) -> None:
    d = agent_pb2.McpToolDefinition(name="lookup", description="Look something up.")
    d.input_schema.struct_value.update({"type": "object", "properties": {"q": {"type": "string"}}})
    d.input_schema_json = "{not json"  # falls back to input_schema
    turn = await raw_turn_sse(
        emu.url,
        emu.api_key,
        "please lookup the capital of Peru",
        tools=[d],
        tool_handlers={"lookup": lambda a: a["q"].upper()},
    )
    (args,) = turn.tool_calls
    assert (args.name, args.tool_name, args.provider_identifier) == ("lookup", "lookup", "")
    assert args.args["q"].string_value == "Peru"  # a capitalised phrase after a preposition
    assert turn.text == expected_tool_reply("lookup", "PERU")


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
_schema_keys = st.sampled_from(
    ["type", "properties", "required", "enum", "const", "default", "items", "minItems", "minimum",
     "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "$ref", "$defs"]
)  # fmt: skip
_schemas = st.recursive(
    st.dictionaries(_schema_keys, _json, max_size=4),
    lambda inner: st.dictionaries(
        _schema_keys, inner | _json | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_size=4
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(schema=_schemas, text=st.text(max_size=60), name=st.text(max_size=12))
def test_default_tool_arguments_never_crashes_on_odd_schemas(
    schema: dict[str, Any], text: str, name: str
) -> None:
    """A client may send any schema: the emulated model still produces JSON-compatible arguments."""
    args = default_tool_arguments(schema, text, name)
    assert isinstance(args, dict)
    json.dumps(args)


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        ({"properties": 5}, "t(1, 2)"),
        ({"properties": {"n": {"type": "array", "items": {"type": "integer"}, "minItems": "many"}},
          "required": ["n"]}, "x"),
        ({"properties": {"n": {"type": "integer"}}, "required": ["n"]}, "9" * 5000),
        ({"properties": {"n": {"type": "integer"}}, "required": ["n"]}, "n=" + "9" * 5000),
        ({"anyOf": [{"$ref": "#"}, {"$ref": "#/nowhere/at/all"}]}, "x"),
    ],
)  # fmt: skip
def test_default_tool_arguments_survives_hostile_input(schema: dict[str, Any], text: str) -> None:
    json.dumps(default_tool_arguments(schema, text, "t"))


async def test_a_broken_tool_script_ends_the_turn_with_an_internal_error(emu: Emulator) -> None:
    def script(ctx: ToolContext) -> list[ToolCallScript]:
        raise RuntimeError("bug in the test script")

    emu.behaviour.tool_calls = script
    turn = await raw_turn_sse(emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers=HANDLERS)
    assert turn.end is not None and turn.end.error is not None
    assert turn.end.error.code == "internal" and "bug in the test script" in turn.end.error.message
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"when": object()})]
    turn = await raw_turn_h2(emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers=HANDLERS)
    assert turn.end is not None and turn.end.error is not None
    assert "not JSON" in turn.end.error.message


@RAW
async def test_meta_tool_discovery_updates_are_not_the_callers_tool_calls(
    emu: Emulator, raw_turn: Any
) -> None:
    from google.protobuf import unknown_fields

    emu.behaviour.meta_tool_discovery = True
    emu.behaviour.tool_calls = [ToolCallScript("get_weather", {"city": "Oslo"})]
    turn = await raw_turn(emu.url, emu.api_key, "x", tools=[WEATHER], tool_handlers=HANDLERS)
    assert turn.text == expected_tool_reply("get_weather", "sunny, 21 C in Oslo")
    discovery = [
        u for u in turn.tool_updates
        if getattr(u, u.WhichOneof("message")).tool_call.WhichOneof("tool") is None
    ]  # fmt: skip
    assert [u.WhichOneof("message") for u in discovery] == ["tool_call_started", "tool_call_completed"]
    tc = discovery[0].tool_call_started.tool_call
    fields = unknown_fields.UnknownFieldSet(tc)
    assert [fields[i].field_number for i in range(len(fields))] == [44]  # get_mcp_tools_tool_call
    assert discovery[0].tool_call_started.call_id.endswith("_discover")
    # it precedes the real call, which is still the only exec
    assert turn.tool_updates.index(discovery[0]) == 0 and len(turn.tool_calls) == 1
