"""The connect transport speaks the live dialect (issue 11, docs/live-dialect.md), proven against
the strict emulator: memory, system prompt, tools, turn end and early stop work; and the same
conversations FAIL when the client is made to use the old variant, so the emulator's rules bite.

The emulated model states what it saw; every expected text is computed with ``expected_reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from cursorpipe import CursorClient, CursorPipeConfig, ProtocolError
from cursorpipe.errors import ConfigurationError, CursorPipeError, OutdatedClientError
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply
from cursorpipe.testing.emulator._tools import expected_tools_reply
from cursorpipe.transports.connect import ConnectTransport
from cursorpipe.transports.connect import transport as transport_module
from cursorpipe.transports.connect._turn import MCP_ALLOWED_TOOLS, WireProfile
from cursorpipe.types import ChatMessage, TextDelta, ToolCallEvent, TurnEnd, TurnRequest

MODES = ["never", "always"]
SYSTEM = "You are terse."
FIRST = "My name is Ada."
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def config(emu: Emulator, mode: str = "never", **kw: Any) -> CursorPipeConfig:
    return CursorPipeConfig(
        strategy="connect",
        backend_url=emu.url,
        api_key=emu.api_key,
        use_http2=mode,
        max_retries=0,
        pool_size=0,
        **kw,
    )


def client_for(
    emu: Emulator, mode: str = "never", *, cfg: dict[str, Any] | None = None, **kw: Any
) -> CursorClient:
    c = config(emu, mode, **(cfg or {}))
    return CursorClient(c, transport=ConnectTransport(c, **kw))


async def fingerprint(emu: Emulator) -> str:
    """The key under which the transport remembers a dialect for this emulator's account."""
    transport = ConnectTransport(config(emu))
    await transport.aclose()
    return transport._fingerprint


def run_records(emu: Emulator) -> list[Any]:
    return [r for r in emu.runs if r.run_request is not None]


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on 127.0.0.1 (random port); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, http_client=httpx.AsyncClient(timeout=30)
    )


async def three_turns(ask: Any) -> list[str]:
    """A three-turn stateless conversation: every request carries the whole transcript."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": FIRST},
    ]
    answers = []
    for question in (None, "What is the capital of France?", "What was my first message?"):
        if question is not None:
            messages += [{"role": "assistant", "content": answers[-1]}, {"role": "user", "content": question}]
        answers.append(await ask(messages))
    return answers


# ---------------------------------------------------------------------------------------------
# done when: the live dialect works against the strict emulator
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_server_three_turns_system_prompt_and_tool_through_the_openai_sdk() -> None:
    async with Emulator() as emu:
        app = create_app(config(emu), emulated=True)
        async with served(app) as url, openai_client(url) as oai:

            async def ask(messages: list[dict[str, Any]]) -> str:
                done = await oai.chat.completions.create(model="composer-2", messages=messages)  # type: ignore[arg-type]
                return done.choices[0].message.content or ""

            answers = await three_turns(ask)
            assert answers == [
                expected_reply(FIRST, system=SYSTEM),
                expected_reply("What is the capital of France?", earlier=2, first=FIRST, system=SYSTEM),
                # The third question is answered from the first message: memory survived.
                expected_reply("What was my first message?", earlier=4, first=FIRST, system=SYSTEM),
            ]
            runs = run_records(emu)[-3:]
            assert len({r.run_request.conversation_id for r in runs}) == 1  # stable per conversation
            assert all(r.headers["x-cursor-client-type"] == "cli" for r in runs)
            assert not any(r.run_request.HasField("custom_system_prompt") for r in runs)
            assert not any(r.checkpoint_lost or r.cancel_after_turn_ended for r in runs)

            # A tool: offered, called with integer arguments intact, its result used.
            messages: list[dict[str, Any]] = [{"role": "user", "content": "Please add 2 and 3."}]
            first = await oai.chat.completions.create(model="composer-2", messages=messages, tools=[ADD])  # type: ignore[arg-type,list-item]
            (call,) = first.choices[0].message.tool_calls or []
            assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "add"
            args = json.loads(call.function.arguments)
            assert args and all(type(v) is int for v in args.values()), call.function.arguments
            offered = run_records(emu)[-1]
            assert offered.headers["x-cursor-agent-allowed-tools"] == MCP_ALLOWED_TOOLS
            assert offered.mode == "agent" and offered.tools_visible == ["add"]
            assert offered.request_context is not None and [
                t.tool_name for t in offered.request_context.tools
            ] == ["add"]
            result = str(sum(args.values()))
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": result},
            ]
            final = await oai.chat.completions.create(model="composer-2", messages=messages, tools=[ADD])  # type: ignore[arg-type,list-item]
            assert final.choices[0].message.content == expected_tools_reply([("add", result)])
            assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("mode", MODES)
async def test_session_second_turn_after_the_post_turn_work(mode: str) -> None:
    async with Emulator() as emu, client_for(emu, mode) as client, client.session("composer-2") as s:
        assert (await s.prompt("first")).text == expected_reply("first")
        assert (await s.prompt("second")).text == expected_reply("second", earlier=2, first="first", turns=1)
        runs = run_records(emu)[-2:]
        assert [r.outcome for r in runs] == ["completed", "completed"]
        assert not any(r.checkpoint_lost or r.cancel_after_turn_ended for r in runs)


@pytest.mark.parametrize("mode", MODES)
async def test_break_from_a_stream_returns_at_once(mode: str) -> None:
    # A long, slow reply: the caller stops after the first chunk and must not wait for Cursor.
    async with Emulator(Behaviour(chunks=40, token_delay_s=0.05)) as emu, client_for(emu, mode) as client:
        await client.generate("composer-2", "warm up")
        async with aclosing(client.events("composer-2", prompt="a long answer please")) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    break
            started = time.perf_counter()
        elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"break took {elapsed * 1000:.0f} ms"
        await asyncio.sleep(0.2)
        last = run_records(emu)[-1]
        assert last.outcome != "completed"
        # Dropped like the SDK: no cancel_action was sent for the early stop.
        assert not any(m.WhichOneof("message") == "conversation_action" for m in last.client_messages[1:])


async def test_stateful_tool_with_integer_arguments() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(call: Any) -> str:
        seen.append(json.loads(call.arguments))
        return str(sum(seen[-1].values()))

    async with Emulator() as emu, client_for(emu) as client:
        events = [
            e
            async for e in client.events(
                "composer-2", prompt="Please add 2 and 3.", tools=[ADD], tool_handler=handler
            )
        ]
    assert seen and all(type(v) is int for v in seen[0].values())
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == expected_tools_reply([("add", str(sum(seen[0].values())))])
    assert [e.call.name for e in events if isinstance(e, ToolCallEvent)] == ["add"]
    assert isinstance(events[-1], TurnEnd) and events[-1].stop_reason == "stop"
    run = run_records(emu)[-1]
    assert run.mcp_state_answer is not None  # mcp_state_exec_args was asked and answered


# ---------------------------------------------------------------------------------------------
# the rules bite: the old variants fail against the strict emulator
# ---------------------------------------------------------------------------------------------
async def test_history_in_conversation_history_is_lost() -> None:
    old = WireProfile(history="conversation_history")
    async with Emulator() as emu, client_for(emu, wire=old) as client:
        answers = await three_turns(lambda m: client.chat("composer-2", m))
    # The live service does not read conversation_history: the model never saw the first message.
    assert answers[2] == expected_reply("What was my first message?", system=SYSTEM)
    # The permissive emulator (reads conversation_history) would have hidden the problem.
    async with (
        Emulator(Behaviour(read_conversation_history=True)) as emu,
        client_for(emu, wire=old) as client,
    ):
        answers = await three_turns(lambda m: client.chat("composer-2", m))
    assert answers[2] == expected_reply("What was my first message?", earlier=4, first=FIRST, system=SYSTEM)


async def test_custom_system_prompt_refused_for_an_api_key_account(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key_account = Behaviour(custom_system_prompt="never")
    async with Emulator(api_key_account) as emu:
        # The sdk dialect chosen explicitly: the refusal surfaces typed, no switch.
        async with client_for(emu, cfg={"connect_dialect": "sdk"}) as client:
            with pytest.raises(ConfigurationError, match="system-prompt"):
                await client.chat(
                    "composer-2", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
                )
        # Unset, starting in sdk because an earlier switch put it in this process's memory for
        # the account: the refusal switches to cli once, logged once, remembered for the account.
        monkeypatch.setitem(transport_module._DIALECT_MEMORY, await fingerprint(emu), "sdk")
        caplog.set_level(logging.WARNING, logger="cursorpipe.connect")
        for round_ in range(2):
            async with client_for(emu) as client:
                transport = await client.transport()
                assert isinstance(transport, ConnectTransport)
                assert transport.wire.dialect == ("sdk" if round_ == 0 else "cli")
                answer = await client.chat(
                    "composer-2", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
                )
                assert answer == expected_reply("hi", system=SYSTEM)
                assert transport.wire.dialect == "cli"
        warnings = [r for r in caplog.records if "switching the connect dialect" in r.getMessage()]
        assert len(warnings) == 1 and "'sdk' to 'cli'" in warnings[0].getMessage()
        assert run_records(emu)[-1].headers["x-cursor-client-type"] == "cli"
    # A permissive emulator accepts the option: the sdk dialect works there.
    permissive = Emulator(Behaviour(custom_system_prompt="always"))
    async with permissive as emu, client_for(emu, cfg={"connect_dialect": "sdk"}) as client:
        answer = await client.chat(
            "composer-2", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
        )
        assert answer == expected_reply("hi", system=SYSTEM)


async def test_outdated_cli_version_switches_to_sdk_unless_fixed() -> None:
    stale = "cli-2025.01.01-0000000"
    async with Emulator() as emu:
        async with client_for(emu, cfg={"connect_dialect": "cli", "client_version": stale}) as client:
            with pytest.raises(OutdatedClientError):
                await client.generate("composer-2", "hi")
        async with client_for(emu, cfg={"client_version": stale}) as client:
            assert await client.generate("composer-2", "hi") == expected_reply("hi")
            last = run_records(emu)[-1]
            assert (last.headers["x-cursor-client-type"], last.headers["x-cursor-client-version"]) == (
                "sdk",
                stale,
            )


async def test_tools_hidden_without_the_mcp_allowed_tools_family() -> None:
    async with Emulator() as emu:
        async with client_for(emu, wire=WireProfile(mcp_allowed_tools=False)) as client:
            result = await client.complete(
                "composer-2", [{"role": "user", "content": "Please add 2 and 3."}], tools=[ADD]
            )
        # Header "" = no tools for the model: it answers without calling, tools unseen.
        assert not result.tool_calls
        assert result.text == expected_reply("Please add 2 and 3.", mode="agent")
        assert run_records(emu)[-1].tools_visible == []
        async with client_for(emu) as client:
            result = await client.complete(
                "composer-2", [{"role": "user", "content": "Please add 2 and 3."}], tools=[ADD]
            )
        assert [c.name for c in result.tool_calls] == ["add"]


@pytest.mark.parametrize("mode", MODES)
async def test_resetting_at_turn_ended_loses_the_checkpoint(mode: str) -> None:
    # A client that drops the stream right at turn_ended (no post-turn guard) loses the final
    # checkpoint: the session's next turn fails with Blob not found (live-dialect.md row 10).
    async with Emulator() as emu, client_for(emu, mode, post_turn_guard_s=0.0) as client:
        async with client.session("composer-2") as s:
            assert (await s.prompt("first")).text == expected_reply("first")
            runs_before = len(run_records(emu))
            with pytest.raises(ProtocolError, match="Blob not found") as info:
                await s.prompt("second")
        assert info.value.code == "blob_not_found" and not info.value.retryable
        # not retried: the same state fails the same way (one run, not the client's retry budget)
        assert len(run_records(emu)) == runs_before + 1
        assert any(r.checkpoint_lost for r in run_records(emu))


async def test_gate_on_the_sdk_client_type_switches_to_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    # An account without SDK access (live-dialect.md row 1), in sdk because of an earlier switch.
    async with Emulator(Behaviour(sdk_client_allowed=False)) as emu:
        monkeypatch.setitem(transport_module._DIALECT_MEMORY, await fingerprint(emu), "sdk")
        async with client_for(emu) as client:
            assert await client.generate("composer-2", "hi") == expected_reply("hi")
        first, second = run_records(emu)[-2:]
        assert first.refusal and first.headers["x-cursor-client-type"] == "sdk"
        assert second.headers["x-cursor-client-type"] == "cli" and second.outcome == "completed"
        # Chosen explicitly, the gate surfaces as an error instead.
        async with client_for(emu, cfg={"connect_dialect": "sdk"}) as client:
            with pytest.raises(CursorPipeError, match="SDK access"):
                await client.generate("composer-2", "hi")


async def test_web_queries_approved_unless_turned_off() -> None:
    async with Emulator(Behaviour(interaction_query=["web_search", "web_fetch", "ask_question"])) as emu:
        async with client_for(emu) as client:
            on = await client.generate("composer-2", "look it up")
        async with client_for(emu, cfg={"approve_web_queries": False}) as client:
            off = await client.generate("composer-2", "look it up")
    approved = [("web_search", "approved"), ("web_fetch", "approved"), ("ask_question", "rejected")]
    rejected = [("web_search", "rejected"), ("web_fetch", "rejected"), ("ask_question", "rejected")]
    assert on == expected_reply("look it up", queries=approved)
    assert off == expected_reply("look it up", queries=rejected)


async def test_stateless_conversation_ids_are_stable_and_rotate() -> None:
    transport = ConnectTransport(CursorPipeConfig(api_key="crsr_" + "0" * 40))
    await transport.aclose()
    opening = [ChatMessage.of("system", SYSTEM), ChatMessage.of("user", FIRST)]
    later = [*opening, ChatMessage.of("assistant", "a"), ChatMessage.of("user", "b")]
    a = transport._stateless_state(TurnRequest(model="m", messages=tuple(opening)))
    b = transport._stateless_state(TurnRequest(model="m", messages=tuple(later)))
    assert a.conversation_id == b.conversation_id and a.blob_key == b.blob_key
    other = transport._stateless_state(TurnRequest(model="m", messages=(ChatMessage.of("user", "x"),)))
    assert other.conversation_id != a.conversation_id and other.blob_key != a.blob_key
    # After a poisoned-conversation error (row 20) the same conversation gets a new id.
    transport._rotate(b)
    c = transport._stateless_state(TurnRequest(model="m", messages=tuple(later)))
    assert c.conversation_id != a.conversation_id and c.blob_key != a.blob_key
    again = transport._stateless_state(TurnRequest(model="m", messages=(ChatMessage.of("user", "x"),)))
    assert again.conversation_id == other.conversation_id


@pytest.mark.parametrize("mode", MODES)
async def test_session_keeps_its_own_roots_over_placeholder_echoes(mode: str) -> None:
    # The strict emulator echoes the roots with blank user entries (live-dialect.md row 5): a
    # session's later turn must still show the model the opening it was given.
    async with Emulator() as emu:
        transport = ConnectTransport(config(emu, mode))
        try:
            session = await transport.open_session("composer-2")
            opening = (
                ChatMessage.of("system", SYSTEM),
                ChatMessage.of("user", FIRST),
                ChatMessage.of("assistant", "Hello Ada."),
                ChatMessage.of("user", "two"),
            )

            async def turn(*messages: ChatMessage) -> str:
                request = TurnRequest(model="composer-2", messages=messages)
                events = [e async for e in transport.run(request, session=session)]
                return "".join(e.text for e in events if isinstance(e, TextDelta))

            assert await turn(*opening) == expected_reply("two", earlier=2, first=FIRST, system=SYSTEM)
            echoed = run_records(emu)[-1]
            assert echoed.outcome == "completed"
            third = await turn(ChatMessage.of("user", "three"))
            assert third == expected_reply("three", earlier=4, first=FIRST, turns=1, system=SYSTEM)
        finally:
            await transport.aclose()


async def test_server_abort_cancels_the_running_tool_handler() -> None:
    cancelled = asyncio.Event()

    async def slow(call: Any) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    # The emulated model gives up on the tool after 0.3 s: exec_server_control_message.abort.
    async with Emulator(Behaviour(tool_result_timeout_s=0.3)) as emu:
        async with client_for(emu, exec_heartbeat_s=60.0) as client:
            with pytest.raises(CursorPipeError, match="did not return the result"):
                await client.complete(
                    "composer-2", prompt="Please add 2 and 3.", tools=[ADD], tool_handler=slow
                )
        assert cancelled.is_set()
        (call,) = run_records(emu)[-1].tool_calls
        assert call.outcome == "timeout"
