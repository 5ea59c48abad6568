"""The emulator's live-service rules (issue 11, docs/live-dialect.md rows 1-24), driven by the raw
client: for each rule, a request that breaks it is refused or loses the context, the compliant
request works, and the rule's ``Behaviour`` switch relaxes it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cursorpipe._codecs.connect import decode_error_details
from cursorpipe._proto.agent.v1 import agent_pb2
from cursorpipe.testing.emulator import (
    MCP_TOOL_FAMILY,
    Behaviour,
    Emulator,
    expected_reply,
    expected_tool_reply,
    mcp_tool_definition,
    parse_prompt_message,
)
from cursorpipe.testing.emulator.raw import RAW_CLI_IDENTITY, prompt_blob, raw_turn_h2, raw_turn_sse

WEATHER = mcp_tool_definition(
    "get_weather",
    "Get the weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
HANDLERS = {"get_weather": lambda a: f"sunny in {a['city']}"}
TOOL_PROMPT = "What is the weather in Oslo?"
RAW = pytest.mark.parametrize("raw_turn", [raw_turn_sse, raw_turn_h2], ids=["runsse", "run-h2c"])


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as e:
        yield e


def _error(turn: Any) -> tuple[str, str]:
    assert turn.end is not None and turn.end.error is not None, "the run was expected to fail"
    assert not turn.turn_ended
    return turn.end.error.code, turn.end.error.message


def _custom(text: str) -> Any:
    def mutate(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.custom_system_prompt = text

    return mutate


# -- system prompt (rows 1, 2) ------------------------------------------------------------------


@RAW
async def test_custom_system_prompt_from_a_cli_client_is_an_unknown_option(
    emu: Emulator, raw_turn: Any
) -> None:
    turn = await raw_turn(emu.url, emu.api_key, "hi", mutate_first=_custom("Be brief."))
    assert _error(turn) == ("invalid_argument", "unknown option '--system-prompt'")
    assert emu.runs[-1].refusal == "custom_system_prompt"


@RAW
async def test_the_system_prompt_as_rule_cloud_rule_and_system_message_is_seen(
    emu: Emulator, raw_turn: Any
) -> None:
    turn = await raw_turn(emu.url, emu.api_key, "hi", system_prompt="Be brief.")
    # one text, though it arrived three ways (deduplicated as the model would read one instruction)
    assert turn.text == expected_reply("hi", system="Be brief.")
    run = emu.runs[-1]
    assert run.system_texts == ["Be brief."]
    assert run.request_context is not None and run.request_context.cloud_rule == "Be brief."
    assert [m.role for m in run.prompt_messages] == ["system"]


async def test_only_global_rules_reach_the_model(emu: Emulator) -> None:
    """A rule of another type (here: no type) is not applied to every request."""

    def no_global(msg: agent_pb2.AgentClientMessage) -> None:
        del msg.run_request.conversation_state.root_prompt_messages_json[:]

    turn = await raw_turn_sse(emu.url, emu.api_key, "hi", system_prompt="Be brief.", mutate_first=no_global)
    assert turn.text == expected_reply("hi", system="Be brief.")  # rule + cloud rule still carry it

    async with Emulator() as emu2:
        # without the cloud rule and system message, an untyped rule alone is not seen
        def rule_only(msg: agent_pb2.AgentClientMessage) -> None:
            del msg.run_request.conversation_state.root_prompt_messages_json[:]

        turn = await raw_turn_sse(emu2.url, emu2.api_key, "hi", mutate_first=rule_only)
        assert turn.text == expected_reply("hi")


async def test_custom_system_prompt_is_accepted_from_the_sdk_client_type(emu: Emulator) -> None:
    """Dialect-aware: Cursor's own SDK sends custom_system_prompt with ``x-cursor-client-type: sdk``
    (SDK access is allow-listed per account, row 1); the conformance tests need it to work."""
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "hi", identity=("sdk", "sdk-python-1.1.0"), mutate_first=_custom("Be brief.")
    )
    assert turn.text == expected_reply("hi", system="Be brief.")


async def test_an_account_that_never_allows_custom_system_prompt_refuses_the_sdk_too() -> None:
    async with Emulator(Behaviour(custom_system_prompt="never")) as emu:
        turn = await raw_turn_sse(
            emu.url,
            emu.api_key,
            "hi",
            identity=("sdk", "sdk-python-1.1.0"),
            mutate_first=_custom("Be brief."),
        )
    assert _error(turn) == ("invalid_argument", "unknown option '--system-prompt'")


async def test_switch_accepts_custom_system_prompt_from_anyone() -> None:
    async with Emulator(Behaviour(custom_system_prompt="always")) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "hi", mutate_first=_custom("Be brief."))
    assert turn.text == expected_reply("hi", system="Be brief.")


async def test_an_account_without_sdk_access_refuses_the_sdk_client_type() -> None:
    async with Emulator(Behaviour(sdk_client_allowed=False)) as emu:
        refused = await raw_turn_sse(emu.url, emu.api_key, "hi", identity=("sdk", "sdk-python-1.1.0"))
        ok = await raw_turn_sse(emu.url, emu.api_key, "hi")  # the cli identity still works
    assert _error(refused)[0] == "permission_denied"
    info = decode_error_details(refused.end.error.details)
    assert info is not None and info.name == "UNAUTHORIZED"
    assert ok.text == expected_reply("hi")


# -- identity (row 1) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["cli-2025.01.02-0c04a8a", "cli-2026.06.30-e8db854", "cli-latest", "sdk-python-1.1.0", ""]
)
async def test_outdated_or_malformed_cli_versions_are_refused(emu: Emulator, version: str) -> None:
    turn = await raw_turn_sse(emu.url, emu.api_key, "hi", identity=("cli", version))
    assert _error(turn)[0] == "permission_denied"
    info = decode_error_details(turn.end.error.details)
    assert info is not None and info.name == "OUTDATED_CLIENT"
    assert emu.runs[-1].refusal


@pytest.mark.parametrize("version", [RAW_CLI_IDENTITY[1], "cli-2026.07.01-0000000", "cli-2026.12.01-abcdef1"])
async def test_recent_cli_versions_work(emu: Emulator, version: str) -> None:
    turn = await raw_turn_sse(emu.url, emu.api_key, "hi", identity=("cli", version))
    assert turn.text == expected_reply("hi")


async def test_the_version_floor_is_configurable_and_can_be_switched_off() -> None:
    async with Emulator(Behaviour(min_cli_version="2026.10.01")) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "hi")  # 2026.09.02 is now too old
        assert _error(turn)[0] == "permission_denied"
    async with Emulator(Behaviour(min_cli_version=None)) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "hi", identity=("cli", "cli-2020.01.01-0000000"))
        assert turn.text == expected_reply("hi")


# -- workspace context (row 24) -----------------------------------------------------------------


async def test_exclude_workspace_context_is_refused_unless_switched_off() -> None:
    def exclude(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.exclude_workspace_context = True

    async with Emulator() as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "hi", mutate_first=exclude)
        assert _error(turn) == ("invalid_argument", "Workspace context exclusion is not allowed")
    async with Emulator(Behaviour(reject_exclude_workspace_context=False)) as emu:
        turn = await raw_turn_sse(emu.url, emu.api_key, "hi", mutate_first=exclude)
        assert turn.text == expected_reply("hi")


# -- memory: prompt messages and blobs (rows 3, 4, 5) ------------------------------------------


@RAW
async def test_three_stateless_turns_remember_the_first_message(emu: Emulator, raw_turn: Any) -> None:
    t1 = await raw_turn(emu.url, emu.api_key, "My name is Ada.", system_prompt="Be brief.")
    assert t1.text == expected_reply("My name is Ada.", system="Be brief.")
    history = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": t1.text}]
    t2 = await raw_turn(
        emu.url, emu.api_key, "I like tea.", system_prompt="Be brief.", prompt_messages=history
    )
    history += [{"role": "user", "content": "I like tea."}, {"role": "assistant", "content": t2.text}]
    t3 = await raw_turn(
        emu.url, emu.api_key, "What was my first message?", system_prompt="Be brief.", prompt_messages=history
    )
    assert t3.text == expected_reply(
        "What was my first message?", earlier=4, first="My name is Ada.", system="Be brief."
    )


async def test_a_prompt_message_inlined_instead_of_a_blob_id_is_blob_not_found(emu: Emulator) -> None:
    """Row 4: the field holds SHA-256 ids; JSON inlined there names no blob."""

    def inline(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.conversation_state.root_prompt_messages_json.append(b'{"role":"user","content":"hi"}')

    turn = await raw_turn_sse(emu.url, emu.api_key, "hello", mutate_first=inline)
    assert _error(turn) == ("internal", "Blob not found")


async def test_a_blob_that_is_not_a_prompt_message_is_refused(emu: Emulator) -> None:
    blobs: dict[bytes, bytes] = {}
    bid, data = prompt_blob({"role": "narrator", "content": "x"})
    blobs[bid] = data

    def add(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.conversation_state.root_prompt_messages_json.append(bid)

    turn = await raw_turn_sse(emu.url, emu.api_key, "hello", blobs=blobs, mutate_first=add)
    code, message = _error(turn)
    assert code == "invalid_argument" and "narrator" in message


async def test_echoed_roots_hold_placeholders_so_reusing_them_loses_the_first_message(emu: Emulator) -> None:
    """Row 5 [B]: the checkpoint's roots replace user entries with empty placeholders. A client that
    reuses them instead of rebuilding from its transcript loses the first user message."""
    blobs: dict[bytes, bytes] = {}
    history = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hi Ada."}]
    t1 = await raw_turn_sse(emu.url, emu.api_key, "I like tea.", blobs=blobs, prompt_messages=history)
    assert t1.text == expected_reply("I like tea.", earlier=2, first="My name is Ada.")
    assert t1.checkpoint is not None
    echoed = [parse_prompt_message(blobs[b]) for b in t1.checkpoint.root_prompt_messages_json]
    assert [(m.role, m.text) for m in echoed if m.role != "system"] == [
        ("user", ""),
        ("assistant", "Hi Ada."),
    ]
    t2 = await raw_turn_sse(emu.url, emu.api_key, "Who am I?", blobs=blobs, checkpoint=t1.checkpoint)
    # 2 roots (placeholder, assistant) + turn 1 (user, assistant): the first user message is empty
    assert t2.text == expected_reply("Who am I?", earlier=4, first="", turns=1)
    async with Emulator(Behaviour(placeholder_user_roots=False)) as emu2:
        blobs = {}
        t1 = await raw_turn_sse(emu2.url, emu2.api_key, "I like tea.", blobs=blobs, prompt_messages=history)
        t2 = await raw_turn_sse(emu2.url, emu2.api_key, "Who am I?", blobs=blobs, checkpoint=t1.checkpoint)
        assert t2.text == expected_reply("Who am I?", earlier=4, first="My name is Ada.", turns=1)


# -- turn end (row 10) --------------------------------------------------------------------------


@RAW
async def test_a_session_survives_when_the_stream_is_read_to_its_end(emu: Emulator, raw_turn: Any) -> None:
    blobs: dict[bytes, bytes] = {}
    t1 = await raw_turn(emu.url, emu.api_key, "one", blobs=blobs)
    assert emu.runs[-1].outcome == "completed" and not emu.runs[-1].checkpoint_lost
    assert t1.checkpoint is not None and all(b in blobs for b in t1.checkpoint.turns)
    t2 = await raw_turn(emu.url, emu.api_key, "two", blobs=blobs, checkpoint=t1.checkpoint)
    assert t2.text == expected_reply("two", earlier=2, first="one", turns=1)


@RAW
async def test_a_reset_after_turn_ended_loses_the_checkpoint(emu: Emulator, raw_turn: Any) -> None:
    blobs: dict[bytes, bytes] = {}
    conversation = "conv-reset"
    t1 = await raw_turn(
        emu.url, emu.api_key, "one", blobs=blobs, conversation_id=conversation, reset_after_turn_ended=True
    )
    assert t1.turn_ended and t1.reset and t1.text == expected_reply("one")
    await _until_finished(emu)
    assert emu.runs[-1].checkpoint_lost and emu.runs[-1].outcome == "checkpoint_lost"
    # the checkpoint the client kept names the turn blob the client never stored
    assert t1.checkpoint is not None and not any(b in blobs for b in t1.checkpoint.turns)
    t2 = await raw_turn(
        emu.url, emu.api_key, "two", blobs=blobs, checkpoint=t1.checkpoint, conversation_id=conversation
    )
    assert _error(t2) == ("internal", "Blob not found")


async def test_a_lost_checkpoint_fails_the_next_run_even_with_an_older_checkpoint(emu: Emulator) -> None:
    blobs: dict[bytes, bytes] = {}
    t1 = await raw_turn_sse(emu.url, emu.api_key, "one", blobs=blobs, conversation_id="c1")
    await raw_turn_sse(
        emu.url,
        emu.api_key,
        "two",
        blobs=blobs,
        checkpoint=t1.checkpoint,
        conversation_id="c1",
        reset_after_turn_ended=True,
    )
    await _until_finished(emu)
    assert emu.runs[-1].checkpoint_lost
    t3 = await raw_turn_sse(
        emu.url, emu.api_key, "three", blobs=blobs, checkpoint=t1.checkpoint, conversation_id="c1"
    )
    assert _error(t3) == ("internal", "Blob not found")
    # one-shot: the conversation recovers on the next run
    t4 = await raw_turn_sse(
        emu.url, emu.api_key, "four", blobs=blobs, checkpoint=t1.checkpoint, conversation_id="c1"
    )
    assert t4.text == expected_reply("four", earlier=2, first="one", turns=1)


async def test_old_turn_end_order_when_switched_off() -> None:
    async with Emulator(Behaviour(post_turn_blob=False)) as emu:
        blobs: dict[bytes, bytes] = {}
        t1 = await raw_turn_h2(emu.url, emu.api_key, "one", blobs=blobs, reset_after_turn_ended=True)
        await _until_finished(emu)
        assert not emu.runs[-1].checkpoint_lost
        cases = [m.WhichOneof("message") for m in t1.server_messages][-3:]
        assert cases == ["kv_server_message", "conversation_checkpoint_update", "interaction_update"]
        t2 = await raw_turn_h2(emu.url, emu.api_key, "two", blobs=blobs, checkpoint=t1.checkpoint)
        assert t2.text == expected_reply("two", earlier=2, first="one", turns=1)


async def test_cancel_action_after_turn_ended_is_recorded_not_obeyed(emu: Emulator) -> None:
    cancel = agent_pb2.AgentClientMessage()
    cancel.conversation_action.cancel_action.SetInParent()
    sent: list[agent_pb2.AgentClientMessage] = []

    # send cancel_action the moment turn_ended arrives, as clients did before issue 11
    async def run() -> Any:
        from cursorpipe.testing.emulator import raw

        original = raw._Answerer.handle

        def handle(self: Any, msg: agent_pb2.AgentServerMessage) -> list[agent_pb2.AgentClientMessage]:
            out = original(self, msg)
            if msg.interaction_update.WhichOneof("message") == "turn_ended":
                sent.append(cancel)
                out.append(cancel)
            return out

        raw._Answerer.handle = handle  # type: ignore[method-assign]
        try:
            return await raw_turn_h2(emu.url, emu.api_key, "one")
        finally:
            raw._Answerer.handle = original  # type: ignore[method-assign]

    turn = await run()
    assert sent and turn.end is not None and turn.end.error is None
    run_rec = emu.runs[-1]
    assert run_rec.cancel_after_turn_ended and run_rec.outcome == "completed"


async def _until_finished(emu: Emulator) -> None:
    import asyncio

    for _ in range(200):
        if emu.runs and emu.runs[-1].finished:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the emulator did not finish the run")


# -- tools (rows 6-9, 15) -----------------------------------------------------------------------


@RAW
async def test_the_live_tool_dialect_gets_the_tool_called(emu: Emulator, raw_turn: Any) -> None:
    turn = await raw_turn(emu.url, emu.api_key, TOOL_PROMPT, tools=[WEATHER], tool_handlers=HANDLERS)
    assert turn.text == expected_tool_reply("get_weather", "sunny in Oslo")
    run = emu.runs[-1]
    assert run.tools_visible == ["get_weather"] and run.mode == "agent"
    assert run.headers["x-cursor-agent-allowed-tools"] == ",".join(MCP_TOOL_FAMILY)
    # mcp_state_exec_args was asked before the tool call and answered with a connected server
    assert run.mcp_state_answer is not None
    servers = run.mcp_state_answer.exec_client_message.mcp_state_exec_result.success.servers
    assert [(s.status, [t.tool_name for t in s.tools]) for s in servers] == [("connected", ["get_weather"])]
    cases = [
        m.exec_server_message.WhichOneof("message")
        for m in turn.server_messages
        if m.HasField("exec_server_message")
    ]
    assert cases.index("mcp_state_exec_args") < cases.index("mcp_args")


@pytest.mark.parametrize(
    ("variant", "kwargs"),
    [
        ("empty allowed-tools header", {"allowed_tools": ""}),
        ("only mcp_tool_call allowed", {"allowed_tools": "mcp_tool_call"}),
        ("ASK mode", {"mode": agent_pb2.AGENT_MODE_ASK}),
        ("mcp_state declined", {"mcp_state": False}),
        (
            "offered nowhere the model reads",
            {"tools_in_run_request": False, "tools_in_request_context": False},
        ),
    ],
)
async def test_tools_the_live_service_would_not_show_are_not_called(
    emu: Emulator, variant: str, kwargs: dict[str, Any]
) -> None:
    turn = await raw_turn_sse(
        emu.url, emu.api_key, TOOL_PROMPT, tools=[WEATHER], tool_handlers=HANDLERS, **kwargs
    )
    assert turn.tool_calls == [], variant
    mode = "ask" if "mode" in kwargs else "agent"
    assert turn.text == expected_reply(TOOL_PROMPT, mode=mode), variant
    assert emu.runs[-1].tools_visible == []


@pytest.mark.parametrize(
    "kwargs",
    [{"tools_in_run_request": False}, {"tools_in_request_context": False}, {"allowed_tools": None}],
    ids=["request-context only", "mcp_tools only", "header absent (default tool set)"],
)
async def test_tools_in_either_place_or_without_the_header_are_called(
    emu: Emulator, kwargs: dict[str, Any]
) -> None:
    turn = await raw_turn_sse(
        emu.url, emu.api_key, TOOL_PROMPT, tools=[WEATHER], tool_handlers=HANDLERS, **kwargs
    )
    assert turn.text == expected_tool_reply("get_weather", "sunny in Oslo")


async def test_a_server_that_is_not_connected_or_does_not_list_the_tool_hides_it(emu: Emulator) -> None:
    from cursorpipe.testing.emulator import raw

    original = raw._Answerer._mcp_state

    def pending(self: Any, result: agent_pb2.McpStateExecResult) -> None:
        original(self, result)
        result.success.servers[0].status = "needs_auth"

    raw._Answerer._mcp_state = pending  # type: ignore[method-assign]
    try:
        turn = await raw_turn_sse(emu.url, emu.api_key, TOOL_PROMPT, tools=[WEATHER], tool_handlers=HANDLERS)
    finally:
        raw._Answerer._mcp_state = original  # type: ignore[method-assign]
    assert turn.tool_calls == [] and emu.runs[-1].tools_visible == []


async def test_tool_gates_switched_off_show_every_offered_tool() -> None:
    async with Emulator(Behaviour(tool_gates=False, mcp_state=False)) as emu:
        turn = await raw_turn_sse(
            emu.url,
            emu.api_key,
            TOOL_PROMPT,
            tools=[WEATHER],
            tool_handlers=HANDLERS,
            allowed_tools="",
            mode=agent_pb2.AGENT_MODE_ASK,
            mcp_state=False,
        )
    assert turn.text == expected_tool_reply("get_weather", "sunny in Oslo")


@pytest.mark.parametrize("bad_id", ["call 1", "call.1", "x" * 65, "", "toolu_01/abc"])
async def test_tool_call_ids_outside_the_pattern_are_an_opaque_resource_exhausted(
    emu: Emulator, bad_id: str
) -> None:
    messages = [
        {"role": "user", "content": TOOL_PROMPT},
        {
            "role": "assistant",
            "content": [{"type": "tool-call", "toolCallId": bad_id, "toolName": "get_weather", "args": {}}],
        },
        {
            "role": "tool",
            "content": [
                {"type": "tool-result", "toolCallId": bad_id, "toolName": "get_weather", "result": "rain"}
            ],
        },
    ]
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "", tools=[WEATHER], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert _error(turn) == ("resource_exhausted", "Error")
    assert not turn.end.error.details  # opaque: nothing says which id
    assert emu.runs[-1].rejected_tool_call_id == bad_id
    async with Emulator(Behaviour(strict_tool_call_ids=False)) as relaxed:
        turn = await raw_turn_sse(
            relaxed.url,
            relaxed.api_key,
            "",
            tools=[WEATHER],
            tool_handlers=HANDLERS,
            prompt_messages=messages,
        )
    assert turn.text == expected_tool_reply("get_weather", "rain")


async def test_valid_tool_call_ids_pass(emu: Emulator) -> None:
    good = "call_" + "a" * 59  # 64 characters
    messages = [
        {"role": "user", "content": TOOL_PROMPT},
        {
            "role": "assistant",
            "content": [{"type": "tool-call", "toolCallId": good, "toolName": "get_weather", "args": {}}],
        },
        {
            "role": "tool",
            "content": [
                {"type": "tool-result", "toolCallId": good, "toolName": "get_weather", "result": "rain"}
            ],
        },
    ]
    turn = await raw_turn_sse(
        emu.url, emu.api_key, "", tools=[WEATHER], tool_handlers=HANDLERS, prompt_messages=messages
    )
    assert turn.text == expected_tool_reply("get_weather", "rain")


# -- all rules relaxed at once ----------------------------------------------------------------


async def test_permissive_behaviour_accepts_the_pre_issue_11_client() -> None:
    """The variant cursorpipe sent before issue 11 (sdk-like identity omitted, custom_system_prompt,
    history in conversation_history, tools only in mcp_tools, ASK mode, empty allowed-tools header,
    mcp_state declined, stream reset at turn_ended) works only against the permissive emulator."""

    def old(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.custom_system_prompt = "Be brief."
        hist = msg.run_request.action.user_message_action.conversation_history
        hist.messages.add().user.content.add().text.text = "My name is Ada."
        hist.messages.add().assistant.content.add().text.text = "Hi Ada."

    kwargs: dict[str, Any] = {
        "identity": ("cli", "cli-2024.01.01-0000000"),
        "mutate_first": old,
        "tools": [WEATHER],
        "tool_handlers": HANDLERS,
        "tools_in_request_context": False,
        "allowed_tools": "",
        "mode": agent_pb2.AGENT_MODE_ASK,
        "mcp_state": False,
    }
    async with Emulator() as strict:
        turn = await raw_turn_sse(strict.url, strict.api_key, "Who am I?", **kwargs)
        assert _error(turn)[0] == "permission_denied"
    async with Emulator(Behaviour.permissive(auto_tool_calls=False)) as relaxed:
        turn = await raw_turn_sse(relaxed.url, relaxed.api_key, "Who am I?", **kwargs)
    assert turn.text == expected_reply(
        "Who am I?", earlier=2, first="My name is Ada.", system="Be brief.", tools=["get_weather"], mode="ask"
    )
    assert json.loads(json.dumps(relaxed.runs[-1].system_texts)) == ["Be brief."]


# -- the sans-IO pieces -------------------------------------------------------------------------


def test_parse_prompt_message_shapes() -> None:
    from cursorpipe.testing.emulator._view import PromptMessageError

    m = parse_prompt_message(b'{"role":"user","content":[{"type":"text","text":"a"},{"type":"image"},"b"]}')
    assert (m.role, m.text, m.images) == ("user", "ab", 1)
    m = parse_prompt_message(
        json.dumps(
            {
                "role": "assistant",
                "content": [{"type": "tool-call", "toolCallId": "c1", "toolName": "f", "input": {"x": 3}}],
            }
        ).encode()
    )
    assert m.tool_calls == (("c1", "f", {"x": 3}),)
    m = parse_prompt_message(
        json.dumps(
            {
                "role": "tool",
                "content": [
                    {"type": "tool-result", "toolCallId": "c1", "output": {"type": "text", "value": "ok"}}
                ],
            }
        ).encode()
    )
    assert [(r.tool_call_id, r.text, r.is_error) for r in m.tool_results] == [("c1", "ok", False)]
    m = parse_prompt_message(
        b'{"role":"tool","tool_call_id":"c2","name":"g","content":"bad","is_error":true}'
    )
    assert [(r.tool_call_id, r.name, r.text) for r in m.tool_results] == [("c2", "g", "error: bad")]
    for bad in (
        b"not json",
        b"[]",
        b'{"role":"robot"}',
        b'{"role":"user","content":[{"type":"video"}]}',
        b'{"role":"user","content":5}',
    ):
        with pytest.raises(PromptMessageError):
            parse_prompt_message(bad)


@pytest.mark.parametrize(
    ("header", "visible"),
    [
        (None, True),
        ("", False),
        ("mcp_tool_call", False),
        ("mcp_tool_call,get_mcp_tools_tool_call", True),
        (",".join(MCP_TOOL_FAMILY), True),
        ("shell_tool_call, read_file_tool_call", False),
    ],
)
def test_allowed_tools_header_rule(header: str | None, visible: bool) -> None:
    from cursorpipe.testing.emulator._view import tools_allowed_by_header

    headers = {} if header is None else {"x-cursor-agent-allowed-tools": header}
    assert tools_allowed_by_header(headers) is visible


def test_cli_version_rule() -> None:
    from cursorpipe.testing.emulator._view import cli_version_problem

    assert cli_version_problem("cli-2026.07.01-abcdef0", "2026.07.01") is None
    assert "older" in (cli_version_problem("cli-2026.06.30-abcdef0", "2026.07.01") or "")
    assert "unrecognised" in (cli_version_problem("cli-2026.02.30-abcdef0", "2026.01.01") or "")  # no 30 Feb
    assert "unrecognised" in (cli_version_problem("cli-2026.07.01-ABCDEF0", "2026.07.01") or "")


async def test_a_client_that_half_closes_at_turn_ended_loses_the_checkpoint() -> None:
    """The request side closed before the post-turn set_blob was acknowledged: the blob can never
    be stored, so the emulator counts the checkpoint as lost and ends the stream cleanly."""
    import asyncio

    from cursorpipe.testing.emulator._turn import RunRecord, TurnIO, run_turn
    from cursorpipe.testing.emulator.raw import build_run_request

    out: asyncio.Queue[agent_pb2.AgentServerMessage] = asyncio.Queue()
    ends: list[Any] = []

    async def send(msg: agent_pb2.AgentServerMessage) -> None:
        await out.put(msg)

    async def end(error: Any, metadata: Any) -> None:
        ends.append(error)

    io = TurnIO(send=send, end=end, inbound=asyncio.Queue())
    record = RunRecord(transport="test", request_id="r", headers={})
    lost: set[str] = set()
    io.inbound.put_nowait(build_run_request("hi", conversation_id="conv-half"))

    async def client() -> None:
        while True:
            msg = await out.get()
            reply = agent_pb2.AgentClientMessage()
            if msg.HasField("kv_server_message"):
                reply.kv_client_message.id = msg.kv_server_message.id
                if msg.kv_server_message.HasField("set_blob_args"):
                    reply.kv_client_message.set_blob_result.SetInParent()
                else:
                    reply.kv_client_message.get_blob_result.SetInParent()
                io.inbound.put_nowait(reply)
            elif msg.HasField("exec_server_message"):
                reply.exec_client_message.id = msg.exec_server_message.id
                reply.exec_client_message.request_context_result.success.SetInParent()
                io.inbound.put_nowait(reply)
                close = agent_pb2.AgentClientMessage()
                close.exec_client_control_message.stream_close.id = msg.exec_server_message.id
                io.inbound.put_nowait(close)
            elif msg.interaction_update.HasField("turn_ended"):
                io.inbound.put_nowait(None)  # END_STREAM on the request side
                return

    pump = asyncio.create_task(client())
    await asyncio.wait_for(
        run_turn(
            io,
            Behaviour(),
            record,
            fault=None,
            pending_texts={},
            known_models=lambda _: True,
            lost_checkpoints=lost,
        ),
        5,
    )
    await pump
    assert record.checkpoint_lost and record.outcome == "checkpoint_lost"
    assert lost == {"conv-half"}
    assert ends == [None]  # a clean end-stream: the turn itself completed
