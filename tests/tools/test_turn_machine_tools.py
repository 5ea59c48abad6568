"""Sans-IO pieces of native tool calling on connect (issue 7): the run request's tool definitions,
tool_choice by offered tools + instruction, tool history, and the turn machine's tool-call handling
(deltas, events, the stateless batch rule with and without ``tool_requests_listed``)."""

from __future__ import annotations

import json

from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.transports.connect._turn import (
    ConversationState,
    TurnMachine,
    build_run_request,
    mcp_result_messages,
    offered_tools,
    tool_choice_instruction,
)
from cursorpipe.types import (
    ChatMessage,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    TurnEnd,
    TurnRequest,
)

WEATHER = ToolSpec("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec("get_time", "Time", {"type": "object", "properties": {"tz": {"type": "string"}}})


def request(*messages: ChatMessage, **kw: object) -> TurnRequest:
    return TurnRequest(model="m", messages=messages, **kw)  # type: ignore[arg-type]


def first(req: TurnRequest, **kw: object) -> pb.AgentRunRequest:
    msg = build_run_request(req, ConversationState(), model_id="m", run_id="r", **kw)  # type: ignore[arg-type]
    return msg.run_request


def test_tools_become_mcp_definitions() -> None:
    run = first(request(ChatMessage.of("user", "hi"), tools=(WEATHER, TIME)))
    names = [(d.tool_name, d.name, d.provider_identifier) for d in run.mcp_tools.mcp_tools]
    assert names == [
        ("get_weather", "custom-user-tools-get_weather", "custom-user-tools"),
        ("get_time", "custom-user-tools-get_time", "custom-user-tools"),
    ]
    schema = run.mcp_tools.mcp_tools[0].input_schema.struct_value
    assert schema.fields["type"].string_value == "object"
    assert not run.HasField("custom_system_prompt")


def test_tool_choice_forms() -> None:
    base = (ChatMessage.of("user", "hi"),)
    none = request(*base, tools=(WEATHER,), tool_choice="none")
    assert offered_tools(none) == () and tool_choice_instruction(none) == ""
    assert len(first(none).mcp_tools.mcp_tools) == 0
    named = request(
        *base, tools=(WEATHER, TIME), tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    assert [t.name for t in offered_tools(named)] == ["get_time"]
    assert "'get_time'" in first(named).custom_system_prompt
    required = request(ChatMessage.of("system", "Be brief."), *base, tools=(WEATHER,), tool_choice="required")
    prompt = first(required).custom_system_prompt
    assert prompt.startswith("Be brief.") and "MUST call at least one" in prompt
    assert tool_choice_instruction(request(*base, tools=(WEATHER,), tool_choice="auto")) == ""


def test_tool_exchange_goes_to_trailing_history() -> None:
    call = ToolCall("c1", "get_weather", '{"city": "Oslo"}')
    req = request(
        ChatMessage.of("user", "earlier"),
        ChatMessage.of("assistant", "old answer"),
        ChatMessage.of("user", "weather?"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content=ChatMessage.of("tool", "sunny").content, tool_call_id="c1"),
        tools=(WEATHER,),
    )
    action = first(req).action.user_message_action
    assert action.user_message.text == "weather?"
    assert [m.WhichOneof("message") for m in action.conversation_history.messages] == ["user", "assistant"]
    trailing = action.trailing_conversation_history.messages
    tc = trailing[0].assistant.content[0].tool_call
    assert (tc.tool_call_id, tc.tool_name, json.loads(tc.args_json)) == (
        "c1",
        "get_weather",
        {"city": "Oslo"},
    )
    assert trailing[1].tool.tool_name == "get_weather" and trailing[1].tool.content[0].text.text == "sunny"
    flat = first(req, history_mode="flatten").action.user_message_action
    assert "<tool_calls>" in flat.user_message.text and "sunny" in flat.user_message.text
    assert not flat.HasField("trailing_conversation_history")


def _update(**kw: object) -> pb.AgentServerMessage:
    return pb.AgentServerMessage(interaction_update=pb.InteractionUpdate(**kw))  # type: ignore[arg-type]


def _partial(call_id: str, name: str, delta: str) -> pb.AgentServerMessage:
    tc = pb.ToolCall(tool_call_id=call_id)
    tc.mcp_tool_call.args.tool_name = name
    return _update(
        partial_tool_call=pb.PartialToolCallUpdate(call_id=call_id, tool_call=tc, args_text_delta=delta)
    )


def _exec(exec_id: int, call_id: str, name: str, city: str) -> pb.AgentServerMessage:
    args = pb.McpArgs(name=f"custom-user-tools-{name}", tool_name=name, tool_call_id=call_id)
    args.args["city"].string_value = city
    return pb.AgentServerMessage(exec_server_message=pb.ExecServerMessage(id=exec_id, mcp_args=args))


def test_machine_stateless_batch_rules() -> None:
    m = TurnMachine(ConversationState(), tools=["get_weather"])
    events = m.handle(_partial("c1", "get_weather", '{"city": ')).events
    events += m.handle(_partial("c1", "get_weather", '"Oslo"}')).events
    assert events == [
        ToolCallDelta(0, id="c1", name="get_weather"),
        ToolCallDelta(0, arguments_delta='{"city": '),
        ToolCallDelta(0, arguments_delta='"Oslo"}'),
    ]
    m.handle(_partial("c2", "get_weather", '{"city": "Rome"}'))
    assert m.tool_batch() == "none"
    step = m.handle(_exec(5, "c1", "get_weather", "Oslo"))
    (event,) = step.events
    assert isinstance(event, ToolCallEvent) and event.call == ToolCall(
        "c1", "get_weather", '{"city": "Oslo"}'
    )
    assert step.replies == [] and step.tool_calls == []  # stateless: left unanswered
    assert m.tool_batch() == "none"  # c2 is announced but has no exec yet
    m.handle(_exec(6, "c2", "get_weather", "Rome"))
    assert m.tool_batch() == "maybe"  # every announced call is complete; no count given
    listed = TurnMachine(ConversationState(), tools=["get_weather"])
    listed.handle(_update(tool_requests_listed=pb.ToolRequestsListedUpdate(call_count=2)))
    listed.handle(_exec(1, "a", "get_weather", "X"))
    # 1 of 2: not complete; the grace rule still applies (the count is [G], never a hang).
    assert listed.tool_batch() == "maybe"
    listed.handle(_exec(2, "b", "get_weather", "Y"))
    assert listed.tool_batch() == "complete"


def test_machine_stateful_and_unknown_tools() -> None:
    m = TurnMachine(ConversationState(), tools=["get_weather"], stateful=True)
    step = m.handle(_exec(3, "c1", "get_weather", "Oslo"))
    assert step.tool_calls == [(3, ToolCall("c1", "get_weather", '{"city": "Oslo"}'))]
    head, delta, event = step.events  # no streamed args: one delta with the whole arguments
    assert head == ToolCallDelta(0, id="c1", name="get_weather")
    assert isinstance(delta, ToolCallDelta) and delta.arguments_delta == '{"city": "Oslo"}'
    assert isinstance(event, ToolCallEvent) and event.handled
    assert m.tool_batch() == "none"
    # A tool that was not offered is declined (throw + stream_close), never surfaced.
    other = m.handle(_exec(4, "x", "rm_rf", "/"))
    assert other.events == [] and other.replies[0].exec_client_control_message.throw.id == 4


def test_mcp_result_messages() -> None:
    ok, close = mcp_result_messages(7, "sunny")
    assert ok.exec_client_message.id == 7
    assert ok.exec_client_message.mcp_result.success.content[0].text.text == "sunny"
    assert not ok.exec_client_message.mcp_result.success.is_error
    assert close.exec_client_control_message.stream_close.id == 7
    err, _ = mcp_result_messages(8, "boom", is_error=True)
    assert err.exec_client_message.mcp_result.success.is_error


def test_turn_ended_after_unanswered_calls_is_a_tool_calls_end() -> None:
    m = TurnMachine(ConversationState(), tools=["get_weather"])
    m.handle(_exec(1, "c1", "get_weather", "Oslo"))
    end = m.handle(_update(turn_ended=pb.TurnEndedUpdate(input_tokens=3, output_tokens=2)))
    assert end.ended and end.events[-1] == TurnEnd("tool_calls", end.events[-1].usage)  # type: ignore[union-attr]
    plain = TurnMachine(ConversationState(), tools=["get_weather"])
    done = plain.handle(_update(turn_ended=pb.TurnEndedUpdate()))
    assert isinstance(done.events[-1], TurnEnd) and done.events[-1].stop_reason == "stop"
