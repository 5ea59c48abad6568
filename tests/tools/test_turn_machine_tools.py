"""Sans-IO pieces of native tool calling on connect (issue 7): the run request's tool definitions,
tool_choice by offered tools + instruction, tool history, and the turn machine's tool-call handling
(deltas, events, the stateless batch rule with and without ``tool_requests_listed``)."""

from __future__ import annotations

import hashlib
import json
import re

from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.transports.connect._turn import (
    ConversationState,
    TurnMachine,
    WireProfile,
    build_run_request,
    mcp_result_messages,
    normalise_call_id,
    offered_tools,
    profile_for,
    request_context,
    system_text,
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
    assert "'get_time'" in system_text(named)
    required = request(ChatMessage.of("system", "Be brief."), *base, tools=(WEATHER,), tool_choice="required")
    prompt = system_text(required)
    assert prompt.startswith("Be brief.") and "MUST call at least one" in prompt
    # The sdk dialect also sends it as custom_system_prompt; cli only as rules (live-dialect.md row 2).
    assert first(required, profile=profile_for("sdk")).custom_system_prompt == prompt
    assert not first(required).HasField("custom_system_prompt")
    rules = request_context("/w", system=prompt, tools=(WEATHER,)).rules
    assert [r.content for r in rules] == [prompt]
    assert tool_choice_instruction(request(*base, tools=(WEATHER,), tool_choice="auto")) == ""


def _roots(run: pb.AgentRunRequest, state: ConversationState) -> list[dict[str, object]]:
    out = []
    for blob_id in run.conversation_state.root_prompt_messages_json:
        data = state.blobs[bytes(blob_id)]
        assert hashlib.sha256(data).digest() == blob_id  # the field holds the blob's SHA-256 id
        out.append(json.loads(data))
    return out


def test_tool_exchange_travels_in_rebuilt_roots() -> None:
    call = ToolCall("c1", "get_weather", '{"city": "Oslo", "days": 3}')
    req = request(
        ChatMessage.of("user", "earlier"),
        ChatMessage.of("assistant", "old answer"),
        ChatMessage.of("user", "weather?"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content=ChatMessage.of("tool", "sunny").content, tool_call_id="c1"),
        tools=(WEATHER,),
    )
    state = ConversationState()
    run = build_run_request(req, state, model_id="m", run_id="r").run_request
    action = run.action.user_message_action
    # The whole transcript is in the roots; the action's user message is empty (a continuation).
    assert action.user_message.text == ""
    assert action.user_message.mode == pb.AGENT_MODE_AGENT  # tools offered (live-dialect.md row 8)
    assert not action.HasField("conversation_history") and not action.HasField(
        "trailing_conversation_history"
    )
    roots = _roots(run, state)
    assert [r["role"] for r in roots] == ["user", "assistant", "user", "assistant", "tool"]
    assert roots[2]["content"] == [{"type": "text", "text": "weather?"}]
    assert roots[3]["content"] == [
        {
            "type": "tool-call",
            "toolCallId": "c1",
            "toolName": "get_weather",
            "args": {"city": "Oslo", "days": 3},
        }
    ]
    assert roots[4]["content"] == [
        {"type": "tool-result", "toolCallId": "c1", "toolName": "get_weather", "result": "sunny"}
    ]
    assert len(run.conversation_state.turns) == 0
    # The schema's own fields, for comparison runs only (the live service ignores them).
    old = first(req, profile=WireProfile(history="conversation_history")).action.user_message_action
    assert old.user_message.text == "weather?"
    assert [m.WhichOneof("message") for m in old.conversation_history.messages] == ["user", "assistant"]
    trailing = old.trailing_conversation_history.messages
    tc = trailing[0].assistant.content[0].tool_call
    assert (tc.tool_call_id, tc.tool_name, json.loads(tc.args_json)) == (
        "c1",
        "get_weather",
        {"city": "Oslo", "days": 3},
    )
    assert trailing[1].tool.tool_name == "get_weather" and trailing[1].tool.content[0].text.text == "sunny"


def test_call_ids_are_normalised_on_the_wire() -> None:
    bad = "call:1/with spaces" + "x" * 70
    assert normalise_call_id("call_ok-1") == "call_ok-1"
    wire = normalise_call_id(bad)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", wire) and normalise_call_id(bad) == wire
    req = request(
        ChatMessage.of("user", "q"),
        ChatMessage(role="assistant", tool_calls=(ToolCall(bad, "get_weather", "{}"),)),
        ChatMessage(role="tool", content=ChatMessage.of("tool", "r").content, tool_call_id=bad),
        tools=(WEATHER,),
    )
    state = ConversationState()
    roots = _roots(build_run_request(req, state, model_id="m", run_id="r").run_request, state)
    assert roots[1]["content"][0]["toolCallId"] == wire  # type: ignore[index]
    assert roots[2]["content"][0]["toolCallId"] == wire  # type: ignore[index]
    # A wire id the server sends back maps to the caller's id.
    m = TurnMachine(ConversationState(), tools=["get_weather"], call_ids={wire: bad})
    step = m.handle(_exec(3, wire, "get_weather", "Oslo"))
    assert [e.call.id for e in step.events if isinstance(e, ToolCallEvent)] == [bad]


def test_integer_arguments_stay_integers() -> None:
    args = pb.McpArgs(name="custom-user-tools-get_weather", tool_name="get_weather", tool_call_id="c9")
    args.args["days"].number_value = 3
    args.args["ratio"].number_value = 0.5
    args.args["nested"].struct_value.fields["n"].number_value = 2
    args.args["list"].list_value.values.add().number_value = 7
    msg = pb.AgentServerMessage(exec_server_message=pb.ExecServerMessage(id=1, mcp_args=args))
    m = TurnMachine(ConversationState(), tools=["get_weather"])
    (call,) = [e.call for e in m.handle(msg).events if isinstance(e, ToolCallEvent)]
    parsed = json.loads(call.arguments)
    assert parsed == {"days": 3, "ratio": 0.5, "nested": {"n": 2}, "list": [7]}
    assert isinstance(parsed["days"], int) and "3.0" not in call.arguments


def test_mcp_state_unknown_tool_and_abort() -> None:
    m = TurnMachine(ConversationState(), tools=[WEATHER])
    state = pb.ExecServerMessage(id=4, mcp_state_exec_args=pb.McpStateExecArgs())
    result, close = m.handle(pb.AgentServerMessage(exec_server_message=state)).replies
    (server,) = result.exec_client_message.mcp_state_exec_result.success.servers
    assert (server.server_name, server.server_identifier, server.status) == (
        "custom-user-tools",
        "custom-user-tools",
        "connected",
    )
    assert [t.tool_name for t in server.tools] == ["get_weather"]
    assert close.exec_client_control_message.stream_close.id == 4
    unknown = pb.ExecServerMessage(id=5, mcp_args=pb.McpArgs(name="x-delete_all", tool_name="delete_all"))
    result, close = m.handle(pb.AgentServerMessage(exec_server_message=unknown)).replies
    nf = result.exec_client_message.mcp_result.tool_not_found
    assert nf.name == "delete_all" and list(nf.available_tools) == ["get_weather"]
    abort = pb.AgentServerMessage(
        exec_server_control_message=pb.ExecServerControlMessage(abort=pb.ExecServerAbort(id=5))
    )
    assert m.handle(abort).aborts == [5]
    # Without tools the server list is empty, still a success.
    bare = TurnMachine(ConversationState())
    reply = bare.handle(pb.AgentServerMessage(exec_server_message=state)).replies[0]
    assert reply.exec_client_message.mcp_state_exec_result.HasField("success")
    assert len(reply.exec_client_message.mcp_state_exec_result.success.servers) == 0


def test_request_context_carries_tools_and_meta_options() -> None:
    ctx = request_context("/w", tools=(WEATHER, TIME))
    assert [t.tool_name for t in ctx.tools] == ["get_weather", "get_time"]
    assert [i.server_name for i in ctx.mcp_instructions] == ["custom-user-tools"]
    assert ctx.mcp_meta_tool_options.enabled
    assert not ctx.rules and not ctx.HasField("cloud_rule")
    bare = request_context("/w")
    assert bare.mcp_meta_tool_options.enabled and len(bare.tools) == 0
    off = request_context("/w", tools=(WEATHER,), profile=WireProfile(tools_in_request_context=False))
    assert len(off.tools) == 0


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
    # A tool that was not offered gets tool_not_found (as the SDK answers), never surfaced.
    other = m.handle(_exec(4, "x", "rm_rf", "/"))
    assert other.events == [] and other.replies[0].exec_client_message.id == 4
    assert other.replies[0].exec_client_message.mcp_result.tool_not_found.name == "rm_rf"


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
