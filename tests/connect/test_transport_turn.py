"""The sans-IO turn machine and run-request builder (connect.md §5-§7), on protobuf objects and
the byte vectors of agent-v1-minimal.md §9."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.errors import ConfigurationError
from cursorpipe.transports.connect._models import parse_rest_models, parse_usable_models, resolve_model
from cursorpipe.transports.connect._turn import (
    ConversationState,
    TurnMachine,
    WireProfile,
    answer_query,
    build_run_request,
    cancel_message,
    conversation_id_for,
    heartbeat_message,
    profile_for,
)
from cursorpipe.types import (
    ChatMessage,
    ImagePart,
    TextDelta,
    TextPart,
    ThinkingDelta,
    TokenCountDelta,
    TurnEnd,
    TurnRequest,
    UsageEvent,
)

CONV = "00000000-0000-4000-8000-000000000001"
RUN = "00000000-0000-4000-8000-000000000002"
VECTOR_RUN = (
    "0a6c0a0012080a060a040a02686922002a2430303030303030302d303030302d343030302d383030302d3030303030"
    "303030303030314a0c0a0a636f6d706f7365722d32ca012430303030303030302d303030302d343030302d383030302d"
    "303030303030303030303032900200"
)


def req(*messages: ChatMessage, mode: str = "ask") -> TurnRequest:
    return TurnRequest(model="composer-2", messages=messages, mode=mode)  # type: ignore[arg-type]


def server(**kw: object) -> pb.AgentServerMessage:
    return pb.AgentServerMessage(**kw)  # type: ignore[arg-type]


def test_run_request_matches_sdk_vector() -> None:
    msg = build_run_request(
        req(ChatMessage.of("user", "hi")),
        ConversationState(conversation_id=CONV),
        model_id="composer-2",
        run_id=RUN,
    )
    um = msg.run_request.action.user_message_action.user_message
    assert um.mode == pb.AGENT_MODE_ASK
    um.mode = pb.AGENT_MODE_UNSPECIFIED  # the SDK vector was built without a mode
    assert msg.SerializeToString().hex() == VECTOR_RUN


def test_fixed_vectors() -> None:
    assert heartbeat_message().SerializeToString().hex() == "3a00"
    cancel = cancel_message("stop")
    assert cancel.conversation_action.cancel_action.reason == "stop"


def test_plan_mode_and_checkpoint() -> None:
    state = ConversationState()
    checkpoint = pb.ConversationStateStructure(turns=[b"\x01" * 32]).SerializeToString()
    state.checkpoint = checkpoint
    msg = build_run_request(
        req(ChatMessage.of("user", "x"), mode="plan"), state, model_id="m", run_id="r", stateless=False
    )
    assert msg.run_request.action.user_message_action.user_message.mode == pb.AGENT_MODE_PLAN
    assert msg.run_request.conversation_state.SerializeToString() == checkpoint
    # A stateless request never reuses a checkpoint: its state is rebuilt from the transcript.
    fresh = build_run_request(req(ChatMessage.of("user", "x")), state, model_id="m", run_id="r")
    assert fresh.run_request.conversation_state.SerializeToString() == b""
    assert fresh.run_request.HasField("conversation_state")
    assert msg.run_request.conversation_id == state.conversation_id
    assert len(state.blob_key) == 64 and int(state.blob_key, 16) >= 0


def _roots(run: pb.AgentRunRequest, state: ConversationState) -> list[dict[str, object]]:
    out = []
    for blob_id in run.conversation_state.root_prompt_messages_json:
        data = state.blobs[bytes(blob_id)]
        assert hashlib.sha256(data).digest() == blob_id
        out.append(json.loads(data))
    return out


TRANSCRIPT = (
    ChatMessage.of("system", "Be brief."),
    ChatMessage.of("user", "one"),
    ChatMessage.of("assistant", "two"),
    ChatMessage.of("user", "three"),
)


def test_cli_dialect_history_in_roots_and_system_as_rule() -> None:
    state = ConversationState()
    run = build_run_request(req(*TRANSCRIPT), state, model_id="m", run_id="r").run_request
    assert not run.HasField("custom_system_prompt")  # live-dialect.md row 2
    action = run.action.user_message_action
    assert action.user_message.text == "three" and action.user_message.mode == pb.AGENT_MODE_ASK
    assert not action.HasField("conversation_history")
    assert _roots(run, state) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "one"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "two"}]},
    ]
    assert len(run.conversation_state.turns) == 0
    # The served blob is what a KV get_blob returns.
    machine = TurnMachine(state, system="Be brief.")
    first_id = bytes(run.conversation_state.root_prompt_messages_json[0])
    got = machine.handle(
        server(kv_server_message=pb.KvServerMessage(id=1, get_blob_args=pb.GetBlobArgs(blob_id=first_id)))
    )
    assert json.loads(got.replies[0].kv_client_message.get_blob_result.blob_data)["role"] == "system"
    # The request-context reply carries the system prompt as a global rule and cloud_rule.
    ctx_reply = machine.handle(
        server(exec_server_message=pb.ExecServerMessage(id=2, request_context_args=pb.RequestContextArgs()))
    ).replies[0]
    ctx = ctx_reply.exec_client_message.request_context_result.success.request_context
    (rule,) = ctx.rules
    assert rule.content == "Be brief." and rule.type.WhichOneof("type") == "global"
    assert ctx.cloud_rule == "Be brief." and ctx.mcp_meta_tool_options.enabled


def test_sdk_dialect_and_schema_history_variants() -> None:
    run = build_run_request(
        req(*TRANSCRIPT), ConversationState(), model_id="m", run_id="r", profile=profile_for("sdk")
    ).run_request
    assert run.custom_system_prompt == "Be brief."
    assert len(run.conversation_state.root_prompt_messages_json) == 3  # history still in the roots
    old = build_run_request(
        req(*TRANSCRIPT),
        ConversationState(),
        model_id="m",
        run_id="r",
        profile=WireProfile(history="conversation_history"),
    ).run_request
    hist = old.action.user_message_action.conversation_history.messages
    assert [h.WhichOneof("message") for h in hist] == ["user", "assistant"]
    assert len(old.conversation_state.root_prompt_messages_json) == 0


def test_profiles_and_stable_conversation_ids() -> None:
    cli, sdk = profile_for("cli"), profile_for("sdk")
    assert (cli.client_type, sdk.client_type) == ("cli", "sdk")
    assert re.fullmatch(r"cli-\d{4}\.\d{2}\.\d{2}-[0-9a-f]{7}", cli.version)
    assert sdk.version == "sdk-python-1.1.0" and profile_for(
        "cli", "cli-2027.01.01-abcdef0"
    ).version.endswith("f0")
    a = conversation_id_for(TRANSCRIPT)
    assert a == conversation_id_for(TRANSCRIPT[:2])  # same opening, same conversation
    assert a != conversation_id_for((ChatMessage.of("user", "other"),))
    assert a != conversation_id_for(TRANSCRIPT, salt="rotated")


def test_images_in_selected_context() -> None:
    image = ImagePart(mime_type="image/png", data=b"\x89PNG-bytes")
    msg = build_run_request(
        req(ChatMessage(role="user", content=(TextPart("look"), image))),
        ConversationState(),
        model_id="m",
        run_id="r",
    )
    raw = msg.run_request.action.user_message_action.user_message.SerializeToString()
    assert b"\x89PNG-bytes" in raw and b"image/png" in raw
    # Field 3 (selected_context) -> field 1 (selected_images) -> field 8 (data).
    assert b"\x1a" in raw and b"\x42\x0a\x89PNG-bytes" in raw
    with pytest.raises(ConfigurationError):
        build_run_request(
            req(ChatMessage(role="user", content=(ImagePart(url="https://x/y.png"),))),
            ConversationState(),
            model_id="m",
            run_id="r",
        )


def test_resume_request() -> None:
    msg = build_run_request(
        req(ChatMessage.of("user", "x")),
        ConversationState(),
        model_id="m",
        run_id="r",
        resume=True,
        checkpoint=b"",
    )
    assert msg.run_request.action.WhichOneof("action") == "resume_action"
    assert msg.run_request.run_id == "r"


def test_machine_events_usage_and_commit() -> None:
    state = ConversationState()
    m = TurnMachine(state, workspace="/w")
    steps = [
        m.handle(
            server(interaction_update=pb.InteractionUpdate(thinking_delta=pb.ThinkingDeltaUpdate(text="hmm")))
        ),
        m.handle(server(interaction_update=pb.InteractionUpdate(text_delta=pb.TextDeltaUpdate(text="Hi")))),
        m.handle(
            server(
                interaction_update=pb.InteractionUpdate(
                    text_delta=pb.TextDeltaUpdate(text="quota", is_server_notice=True)
                )
            )
        ),
        m.handle(server(interaction_update=pb.InteractionUpdate(heartbeat=pb.HeartbeatUpdate()))),
        m.handle(server(interaction_update=pb.InteractionUpdate(token_delta=pb.TokenDeltaUpdate(tokens=3)))),
        m.handle(server(conversation_checkpoint_update=pb.ConversationStateStructure(turns=[b"t" * 32]))),
    ]
    events = [e for s in steps for e in s.events]
    # token_delta is a count, surfaced only for the client's max_tokens limiter.
    assert events == [
        ThinkingDelta("hmm"),
        TextDelta("Hi"),
        TextDelta("quota", notice=True),
        TokenCountDelta(3),
    ]
    assert state.checkpoint == b"" and not any(s.ended for s in steps)
    end = m.handle(
        server(
            interaction_update=pb.InteractionUpdate(
                turn_ended=pb.TurnEndedUpdate(
                    input_tokens=10, output_tokens=5, cache_read_tokens=2, reasoning_tokens=1
                )
            )
        )
    )
    assert end.ended
    usage_event, turn_end = end.events
    assert isinstance(usage_event, UsageEvent) and isinstance(turn_end, TurnEnd)
    assert usage_event.usage.input_tokens == 10 and usage_event.usage.output_tokens == 5
    assert usage_event.usage.cache_read_tokens == 2 and not usage_event.usage.estimated
    assert state.checkpoint == pb.ConversationStateStructure(turns=[b"t" * 32]).SerializeToString()
    assert state.turns == 1


def test_machine_blob_store() -> None:
    state = ConversationState()
    m = TurnMachine(state)
    data = b'{"role":"system","content":"x"}'
    blob_id = hashlib.sha256(data).digest()
    step = m.handle(
        server(
            kv_server_message=pb.KvServerMessage(
                id=3, set_blob_args=pb.SetBlobArgs(blob_id=blob_id, blob_data=data)
            )
        )
    )
    (reply,) = step.replies
    assert reply.SerializeToString().hex() == "1a0408031a00"  # agent-v1-minimal.md §9
    step = m.handle(
        server(kv_server_message=pb.KvServerMessage(id=4, get_blob_args=pb.GetBlobArgs(blob_id=blob_id)))
    )
    assert step.replies[0].kv_client_message.get_blob_result.blob_data == data
    step = m.handle(
        server(kv_server_message=pb.KvServerMessage(id=5, get_blob_args=pb.GetBlobArgs(blob_id=b"x")))
    )
    got = step.replies[0].kv_client_message
    assert got.id == 5 and got.HasField("get_blob_result") and not got.get_blob_result.HasField("blob_data")


def test_machine_execs() -> None:
    m = TurnMachine(ConversationState(), workspace="/srv/w")
    ctx = m.handle(
        server(
            exec_server_message=pb.ExecServerMessage(
                id=1, exec_id="e1", request_context_args=pb.RequestContextArgs()
            )
        )
    )
    result, close = ctx.replies
    env = result.exec_client_message.request_context_result.success.request_context.env
    assert result.exec_client_message.id == 1 and list(env.workspace_paths) == ["/srv/w"]
    assert result.exec_client_message.exec_id == ""  # §6.1: the SDK does not echo exec_id
    assert close.SerializeToString().hex() == "2a040a020801"
    # An exec case outside the proto subset (shell_args = 2) arrives as an unknown field.
    shell = pb.ExecServerMessage()
    shell.ParseFromString(bytes.fromhex("0807") + bytes.fromhex("1200"))
    throw, close = m.handle(server(exec_server_message=shell)).replies
    assert throw.exec_client_control_message.throw.id == 7
    assert "No handler" in throw.exec_client_control_message.throw.error
    assert close.SerializeToString().hex() == "2a040a020807"
    mcp = m.handle(server(exec_server_message=pb.ExecServerMessage(id=9, mcp_args=pb.McpArgs()))).replies
    assert mcp[0].exec_client_message.mcp_result.HasField("tool_not_found")
    assert mcp[1].exec_client_control_message.stream_close.id == 9


@pytest.mark.parametrize(
    ("query_hex", "response_case"),
    [
        ("1200", "web_search_request_response"),
        ("1a00", "ask_question_interaction_response"),
        ("2200", "switch_mode_request_response"),
        ("3a00", "create_plan_request_response"),
        ("4200", "setup_vm_environment_result"),
        ("4a00", "web_fetch_request_response"),
        ("5200", "pr_management_result"),
        ("5a00", "mcp_auth_request_response"),
        ("6200", "generate_image_request_response"),
        ("6a00", "replace_env_result"),
        ("7200", "connect_scm_request_response"),
    ],
)
def test_every_interaction_query_is_answered(query_hex: str, response_case: str) -> None:
    query = pb.InteractionQuery()
    query.ParseFromString(bytes.fromhex("082a" + query_hex))
    (reply,) = TurnMachine(ConversationState()).handle(server(interaction_query=query)).replies
    assert reply.interaction_response.id == 42
    assert reply.interaction_response.WhichOneof("result") == response_case


def test_interaction_query_answers_follow_live_dialect_row_12() -> None:
    def answer(q: pb.InteractionQuery, approve_web: bool = True) -> pb.InteractionResponse:
        return answer_query(q, approve_web=approve_web).interaction_response

    web = pb.InteractionQuery(id=1, web_search_request_query=pb.WebSearchRequestQuery())
    fetch = pb.InteractionQuery(id=2, web_fetch_request_query=pb.WebFetchRequestQuery())
    assert answer(web).web_search_request_response.HasField("approved")
    assert answer(fetch).web_fetch_request_response.HasField("approved")
    assert answer(web, False).web_search_request_response.HasField("rejected")
    assert answer(fetch, False).web_fetch_request_response.HasField("rejected")
    ask = pb.InteractionQuery(id=3, ask_question_interaction_query=pb.AskQuestionInteractionQuery())
    assert answer(ask).ask_question_interaction_response.result.HasField("rejected")
    switch = pb.InteractionQuery(id=4, switch_mode_request_query=pb.SwitchModeRequestQuery())
    assert answer(switch).switch_mode_request_response.HasField("rejected")
    plan = pb.InteractionQuery(id=5, create_plan_request_query=pb.CreatePlanRequestQuery())
    assert answer(plan).create_plan_request_response.result.HasField("error")
    # A case newer than the schema (field 40) gets an empty message under the same number.
    future = pb.InteractionQuery()
    future.ParseFromString(bytes.fromhex("0807") + bytes.fromhex("c20200"))
    reply = answer(future)
    assert reply.id == 7 and reply.SerializeToString() == bytes.fromhex("0807c20200")


def test_unknown_server_message_ignored() -> None:
    msg = pb.AgentServerMessage()
    msg.ParseFromString(bytes.fromhex("4a00"))  # field 9: not in the schema
    step = TurnMachine(ConversationState()).handle(msg)
    assert step.events == [] and step.replies == [] and not step.ended


def test_models_parsing_and_resolution() -> None:
    models = parse_rest_models(
        {
            "items": [
                {
                    "id": "composer-2",
                    "displayName": "Composer 2",
                    "aliases": ["composer"],
                    "parameters": [{"id": "reasoning", "values": [{"value": "high"}]}],
                    "variants": [{"params": [], "isMaxMode": True}],
                },
                {"displayName": "no id"},
            ]
        }
    )
    assert [m.id for m in models] == ["composer-2"]
    assert models[0].aliases == ("composer",) and len(models[0].parameters) == 2
    assert resolve_model("COMPOSER", models) == "composer-2"
    assert resolve_model("auto", models) == "default"
    assert resolve_model("nope", models) is None
    rpc = pb.GetUsableModelsResponse(
        models=[pb.ModelDetails(model_id="m1", display_name="M1", aliases=["x"])]
    )
    parsed = parse_usable_models(rpc)
    assert parsed[0].id == "m1" and parsed[0].display_name == "M1" and parsed[0].aliases == ("x",)


def test_history_image_is_a_data_url_in_the_roots() -> None:
    state = ConversationState()
    msg = build_run_request(
        req(
            ChatMessage(role="user", content=(ImagePart(data=b"img"),)),
            ChatMessage.of("assistant", "ok"),
            ChatMessage.of("user", "again"),
        ),
        state,
        model_id="m",
        run_id="r",
    )
    (image,) = _roots(msg.run_request, state)[0]["content"]  # type: ignore[misc]
    assert image["image"] == "data:image/png;base64," + base64.b64encode(b"img").decode()


def test_choose_model_with_parameters_and_max_mode() -> None:
    from cursorpipe.transports.connect._models import choose_model

    models = parse_rest_models(
        {
            "items": [
                {
                    "id": "big",
                    "aliases": ["b"],
                    "parameters": [{"id": "effort", "values": [{"value": "low"}, {"value": "max"}]}],
                    "variants": [
                        {"params": [{"id": "effort", "value": "low"}]},
                        {"params": [{"id": "effort", "value": "max"}], "isMaxMode": True},
                    ],
                },
                {"id": "plain"},
            ]
        }
    )
    assert choose_model("b", models) == choose_model("big", models)
    low = choose_model("big[effort=low]", models)
    assert low is not None and low.id == "big" and low.parameters == (("effort", "low"),) and not low.max_mode
    top = choose_model(" big [ effort = max ] ", models)
    assert top is not None and top.max_mode
    assert choose_model("missing[effort=low]", models) is None
    with pytest.raises(ConfigurationError, match="effort"):
        choose_model("big[speed=fast]", models)
    with pytest.raises(ConfigurationError, match="low, max"):
        choose_model("big[effort=medium]", models)
    with pytest.raises(ConfigurationError):
        choose_model("big[effort]", models)
    msg = build_run_request(
        req(ChatMessage.of("user", "x")),
        ConversationState(),
        model_id="big",
        run_id="r",
        model_parameters=(("effort", "max"),),
        max_mode=True,
    )
    rm = msg.run_request.requested_model
    assert rm.max_mode and [(p.id, p.value) for p in rm.parameters] == [("effort", "max")]


@pytest.mark.parametrize(
    ("profile_mode", "with_tools", "request_mode", "expected"),
    [
        ("auto", False, "ask", pb.AGENT_MODE_ASK),
        ("auto", False, "plan", pb.AGENT_MODE_PLAN),
        ("auto", True, "ask", pb.AGENT_MODE_AGENT),
        ("ask", True, "ask", pb.AGENT_MODE_ASK),
        ("agent", False, "ask", pb.AGENT_MODE_AGENT),
    ],
)
def test_wire_profile_mode_knob(
    profile_mode: str, with_tools: bool, request_mode: str, expected: int
) -> None:
    """live-dialect.md row 8: the default (``auto``) is AGENT with tools, else the chat mode; the
    probe's knob forces ASK (or AGENT) whatever is offered, and the tools still travel."""
    from cursorpipe.types import ToolSpec

    tools = (ToolSpec("t", "a tool", {"type": "object", "properties": {}}),) if with_tools else ()
    request = TurnRequest(
        model="composer-2",
        messages=(ChatMessage.of("user", "hi"),),
        mode=request_mode,  # type: ignore[arg-type]
        tools=tools,
    )
    msg = build_run_request(
        request,
        ConversationState(conversation_id=CONV),
        model_id="composer-2",
        run_id=RUN,
        profile=WireProfile(mode=profile_mode),  # type: ignore[arg-type]
    )
    assert msg.run_request.action.user_message_action.user_message.mode == expected
    assert len(msg.run_request.mcp_tools.mcp_tools) == len(tools)
