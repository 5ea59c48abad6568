"""The acp transport end to end: CursorClient(strategy="acp") driving the fake ``agent acp``."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import time
from contextlib import aclosing
from pathlib import Path

import pytest
from cursorpipe import (
    AgentCrashError,
    AgentNotFoundError,
    AgentStartupError,
    AgentTimeoutError,
    AuthenticationError,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    UsageEvent,
    UsageLimitError,
)
from cursorpipe.testing.fake_agent.acp import (
    ENV_AUTH_WAITS,
    ENV_HANG_INITIALIZE,
    ENV_SESSION_FAILURES,
    ENV_STDOUT_NOISE,
    HANG_MARKER,
    PERMISSION_MARKER,
    PLAN_MARKER,
    TOOL_MARKER,
    permission_note,
)
from cursorpipe.testing.fake_agent.catalog import (
    ENV_ACCOUNT,
    ENV_CRASH_AFTER,
    ENV_CRASH_CODE,
    ENV_EXPECT_API_KEY,
    ENV_INBAND_ERROR,
    ENV_LATENCY,
    ENV_NETWORK_ERROR,
    ENV_STATE_DIR,
    MODELS,
    expected_reply,
    expected_thinking,
    find_model,
)
from cursorpipe.transports.acp import AcpTransport, flatten_messages
from cursorpipe.types import ChatMessage

from .conftest import MakeClient, Record

API_KEY = "crsr_acp_test_key_5f3a9c"


async def _transport(client: object) -> AcpTransport:
    transport = await client.transport()  # type: ignore[attr-defined]
    assert isinstance(transport, AcpTransport)
    return transport


async def test_generate_returns_the_agents_answer(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    result = await client.complete("auto", prompt="hello there")
    assert result.text == expected_reply("hello there")
    assert result.thinking == expected_thinking("hello there")
    assert result.transport == "acp" and result.model == "auto" and result.session_id
    assert result.usage.estimated and result.usage.output_tokens > 0
    assert result.stop_reason == "stop"
    # The original left Cursor's agent mode on (acp.md §1.5): every session is switched to ask.
    modes = [p for p in record.calls("session/set_config_option") if p["configId"] == "mode"]
    assert [p["value"] for p in modes] == ["ask"]
    assert record.prompt_sessions() == [modes[0]["sessionId"]]


async def test_stream_yields_typed_events_in_order(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks a few ms apart, as from a real model: each must reach the caller as it arrives.
    monkeypatch.setenv(ENV_LATENCY, "0.005")
    client = make_client()
    events = [e async for e in client.events("auto", prompt="stream me")]
    assert isinstance(events[0], TransportInfo) and events[0].transport == "acp"
    assert isinstance(events[-1], TurnEnd) and isinstance(events[-2], UsageEvent)
    kinds = [type(e) for e in events]
    assert kinds.index(ThinkingDelta) < kinds.index(TextDelta)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == expected_reply("stream me")
    chunks = [c async for c in client.stream("auto", "stream me")]
    assert len(chunks) > 1 and "".join(chunks) == expected_reply("stream me")


async def test_chat_flattens_history_and_system_prompt(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    messages = [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four, matey."},
        {"role": "user", "content": "And 3+3?"},
    ]
    reply = await client.chat("auto", messages)
    flat = flatten_messages([ChatMessage.of(m["role"], m["content"]) for m in messages])  # type: ignore[arg-type]
    assert reply == expected_reply(flat)
    assert "Answer like a pirate." in reply and "Four, matey." in reply and reply.endswith("And 3+3?")
    assert record.prompt_texts() == [flat]


async def test_session_keeps_history_in_the_agent(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    async with client.session("auto") as session:
        first = await session.prompt("my name is Ada")
        second = await session.prompt("what is my name?")
    assert first.text == expected_reply("my name is Ada")
    assert second.text == expected_reply("what is my name?", ["my name is Ada"])
    # Only the new message is sent; both turns on the same ACP session.
    assert record.prompt_texts() == ["my name is Ada", "what is my name?"]
    assert len(set(record.prompt_sessions())) == 1
    assert session.session_id == record.prompt_sessions()[0]


async def test_model_switching_per_request_uses_acp_ids(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    high = find_model("gpt-5.3-codex[reasoning=high]")
    sonnet = find_model("claude-4.5-sonnet")
    assert high is not None and sonnet is not None
    r1 = await client.complete("gpt-5.3-codex[reasoning=high]", prompt="a")
    r2 = await client.complete("claude-4.5-sonnet", prompt="b")
    r3 = await client.complete("auto", prompt="c")
    assert (r1.model, r2.model, r3.model) == ("gpt-5.3-codex[reasoning=high]", "claude-4.5-sonnet", "auto")
    assert r1.thinking and not r2.thinking  # the thinking flag follows the chosen model
    values = [p["value"] for p in record.calls("session/set_config_option") if p["configId"] == "model"]
    # ids come from the session's own options (never the CLI ids, acp.md §3.2); auto needs no switch.
    assert values == [high.acp_id, sonnet.acp_id]
    assert r1.text == expected_reply("a")


async def test_unknown_model_is_a_typed_error(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ModelNotFoundError) as info:
        await client.generate("gpt-99-ultra", "hi")
    assert "auto" in info.value.available
    # A model the session lists but the account cannot route fails in-band (acp.md §3.2).
    with pytest.raises(ModelNotFoundError):
        await client.generate("claude-opus-4-7", "hi")


async def test_list_models_maps_to_cli_ids(make_client: MakeClient) -> None:
    client = make_client()
    models = await client.list_models()
    assert [m.id for m in models] == [m.cli_id for m in MODELS]
    by_id = {m.id: m for m in models}
    for fake in MODELS:
        assert by_id[fake.cli_id].matches(fake.acp_id)
        assert by_id[fake.cli_id].display_name == fake.label


async def test_warmup_precreates_sessions_and_never_reuses_one(
    make_client: MakeClient, record: Record
) -> None:
    client = make_client()
    await client.warmup(3)
    transport = await _transport(client)
    assert transport.pool_ready == 3
    precreated = [p for p in record.calls("session/new")]
    assert len(precreated) == 3 and record.calls("session/prompt") == []
    for i in range(6):
        assert await client.generate("auto", f"q{i}") == expected_reply(f"q{i}")
    used = record.prompt_sessions()
    assert len(used) == 6 and len(set(used)) == 6
    # The first prompts ran on pre-created sessions (answers of session/new are not recorded, so
    # compare against the ids the mode switch named right after creation).
    created_order = [
        p["sessionId"] for p in record.calls("session/set_config_option") if p["configId"] == "mode"
    ]
    assert set(used[:3]) == set(created_order[:3])
    for _ in range(500):  # refilled in the background
        if transport.pool_ready == 3:
            break
        await asyncio.sleep(0.02)
    assert transport.pool_ready == 3


async def test_permission_requests_are_rejected_by_default(make_client: MakeClient) -> None:
    client = make_client()
    text = await client.generate("auto", f"run it {PERMISSION_MARKER}")
    assert text == permission_note("reject-once") + expected_reply(f"run it {PERMISSION_MARKER}")


@pytest.mark.parametrize(
    ("policy", "option"), [("allow_once", "allow-once"), ("allow_always", "allow-always")]
)
async def test_permission_policy_allow(make_client: MakeClient, policy: str, option: str) -> None:
    client = make_client(acp_permission_policy=policy)
    text = await client.generate("auto", PERMISSION_MARKER)
    assert text == permission_note(option) + expected_reply(PERMISSION_MARKER)


async def test_images_travel_as_image_blocks(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            ],
        }
    ]
    assert await client.chat("auto", messages) == expected_reply("what is this?")
    blocks = record.calls("session/prompt")[0]["prompt"]
    assert blocks == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "mimeType": "image/png", "data": png},
    ]


async def test_cursor_extension_requests_are_answered(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    text = await client.generate("auto", f"plan {PLAN_MARKER} {TOOL_MARKER}", timeout_s=10)
    assert text == expected_reply(f"plan {PLAN_MARKER} {TOOL_MARKER}")
    await record.wait_for(lambda r: len([m for m in r.inbound() if "error" in m]) >= 2)
    answers = [m for m in record.inbound() if "error" in m and "method" not in m]
    # cursor/create_plan (awaited by the agent) and cursor/update_todos (not awaited) both answered.
    assert [a["error"]["code"] for a in answers] == [-32601, -32601]


async def test_consumer_closing_the_stream_sends_session_cancel(
    make_client: MakeClient, record: Record
) -> None:
    client = make_client()
    async with aclosing(client.events("auto", prompt=f"wait {HANG_MARKER}")) as events:
        async for event in events:
            if isinstance(event, ThinkingDelta):
                break
    sid = record.prompt_sessions()[0]
    await record.wait_for(lambda r: bool(r.messages("session/cancel")))
    cancels = record.messages("session/cancel")
    assert cancels == [{"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": sid}}]
    # The process is still healthy afterwards.
    assert await client.generate("auto", "after") == expected_reply("after")


async def test_pooled_sessions_are_switched_to_the_requested_model_ahead_of_time(
    make_client: MakeClient, record: Record
) -> None:
    sonnet = find_model("claude-4.5-sonnet")
    assert sonnet is not None
    client = make_client()
    await client.warmup(1)
    await client.complete("claude-4.5-sonnet", prompt="a")  # this one switches on its own path
    transport = await client.transport()
    for _ in range(500):
        if transport.pool_ready >= 1:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)

    def switches() -> list[tuple[str, str]]:
        return [
            (p["sessionId"], p["value"])
            for p in record.calls("session/set_config_option")
            if p["configId"] == "model"
        ]

    before = switches()
    await client.complete("claude-4.5-sonnet", prompt="b")
    second = record.prompt_sessions()[1]
    # The pool switched the session before the request took it; the request's path was one prompt.
    assert (second, sonnet.acp_id) in before
    # Nothing switched that session again; the refill the request started may already have
    # switched the *next* pooled session, which is the point.
    assert [s for s in switches() if s[0] == second] == [(second, sonnet.acp_id)]


async def test_finished_and_abandoned_turns_leave_no_routing_state(make_client: MakeClient) -> None:
    # Per-turn bookkeeping (pending prompt ids, routes) must not grow with the number of turns.
    client = make_client()
    assert await client.generate("auto", "one") == expected_reply("one")
    async with aclosing(client.events("auto", prompt=f"wait {HANG_MARKER}")) as events:
        async for event in events:
            if isinstance(event, ThinkingDelta):
                break
    transport = await client.transport()
    conn = transport._conn  # type: ignore[attr-defined]
    for _ in range(200):  # the abandoned turn settles in the background once the cancel lands
        if not (conn._pending or conn._routes or conn._prompt_ids):
            break
        await asyncio.sleep(0.01)
    assert (conn._pending, conn._routes, conn._prompt_ids) == ({}, {}, {})


async def test_task_cancellation_sends_session_cancel(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    task = asyncio.create_task(client.generate("auto", HANG_MARKER))
    await record.wait_for(lambda r: bool(r.calls("session/prompt")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await record.wait_for(lambda r: bool(r.calls("session/cancel")))
    assert [p["sessionId"] for p in record.calls("session/cancel")] == record.prompt_sessions()


async def test_timeout_gives_typed_error_and_cancels(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    await client.warmup(1)  # so the deadline is spent on the turn, not on starting the agent
    start = time.monotonic()
    with pytest.raises(AgentTimeoutError):
        await client.generate("auto", HANG_MARKER, timeout_s=0.5)
    assert time.monotonic() - start < 5
    await record.wait_for(lambda r: bool(r.calls("session/cancel")))
    assert len(record.calls("session/cancel")) == 1


async def test_session_turn_after_a_timeout_still_works(make_client: MakeClient) -> None:
    client = make_client()
    async with client.session("auto") as session:
        with pytest.raises(AgentTimeoutError):
            await session.prompt(f"slow {HANG_MARKER}", timeout_s=0.4)
        result = await session.prompt("next")
    assert result.text.startswith(expected_reply("next"))


async def test_logged_out_without_key_is_an_auth_error(
    make_client: MakeClient, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "logged_out")
    client = make_client()
    with pytest.raises(AuthenticationError, match="agent login"):
        await client.generate("auto", "hi")
    assert record.calls("authenticate") == [{"methodId": "cursor_login"}]


async def test_api_key_skips_authenticate_and_stays_off_argv(
    make_client: MakeClient, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "logged_out")
    client = make_client(api_key=API_KEY)
    await client.warmup(1)
    transport = await _transport(client)
    assert transport.pid is not None
    with open(f"/proc/{transport.pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    assert API_KEY.encode() not in cmdline
    with open(f"/proc/{transport.pid}/environ", "rb") as fh:
        assert f"CURSOR_API_KEY={API_KEY}".encode() in fh.read().split(b"\0")
    assert await client.generate("auto", "hi") == expected_reply("hi")
    assert record.calls("authenticate") == []
    assert all(API_KEY not in " ".join(s["argv"]) for s in record.starts())


async def test_stored_login_authenticates_once(make_client: MakeClient, record: Record) -> None:
    client = make_client()
    assert await client.generate("auto", "hi") == expected_reply("hi")
    assert record.calls("authenticate") == [{"methodId": "cursor_login"}]


async def test_usage_limit_in_the_text_stream(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "usage_limit")
    client = make_client()
    with pytest.raises(UsageLimitError) as info:
        await client.generate("auto", "hi")
    assert not info.value.retryable and info.value.transport == "acp"


async def test_rate_limit_in_the_text_stream(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "rate_limited")
    client = make_client(max_retries=0)
    with pytest.raises(RateLimitError):
        await client.generate("auto", "hi")


async def test_inband_error_after_text(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_INBAND_ERROR, "resource_exhausted")
    client = make_client(max_retries=0)
    seen: list[str] = []

    async def consume() -> None:
        async for chunk in client.stream("auto", "hi"):
            seen.append(chunk)

    with pytest.raises(RateLimitError):
        await consume()
    assert "".join(seen).strip() == expected_reply("hi")


async def test_transient_session_services_failure_is_retried(
    make_client: MakeClient, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SESSION_FAILURES, "2")
    client = make_client(max_retries=0)
    assert await client.generate("auto", "hi") == expected_reply("hi")
    assert len(record.calls("session/new")) == 3


async def test_32_concurrent_prompts_over_one_process(
    make_client: MakeClient, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_LATENCY, "0.002")
    client = make_client()
    await client.warmup(4)
    prompts = [f"question number {i} about topic {i * 7}" for i in range(32)]
    results = await asyncio.gather(*(client.complete("auto", prompt=p) for p in prompts))
    for prompt, result in zip(prompts, results, strict=True):
        assert result.text == expected_reply(prompt)
        assert result.thinking == expected_thinking(prompt)
    assert len(record.starts()) == 1  # one agent acp process served them all
    assert len(set(record.prompt_sessions())) == 32


async def test_sigkill_mid_stream_is_typed_and_the_next_request_succeeds(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_LATENCY, "0.05")
    client = make_client()
    transport = await _transport(client)
    start = 0.0

    async def consume() -> None:
        nonlocal start
        async for event in client.events("auto", prompt="a long answer please"):
            if isinstance(event, TextDelta) and not start:
                assert transport.pid is not None
                os.kill(transport.pid, signal.SIGKILL)
                start = time.monotonic()

    with pytest.raises(AgentCrashError) as info:
        await consume()
    assert start > 0
    assert time.monotonic() - start < 5.0  # the request timeout is minutes; this is immediate
    assert info.value.exit_code == -signal.SIGKILL
    assert await client.generate("auto", "again") == expected_reply("again")
    assert transport.restarts == 1


async def test_crash_reports_exit_code_and_redacted_stderr(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CRASH_AFTER, "2")
    monkeypatch.setenv(ENV_CRASH_CODE, "7")
    client = make_client(api_key=API_KEY, max_retries=0)
    with pytest.raises(AgentCrashError) as info:
        await client.generate("auto", "crash please")
    assert info.value.exit_code == 7
    assert "simulated crash" in info.value.stderr
    assert API_KEY not in info.value.stderr and API_KEY not in str(info.value)


async def test_max_restarts_exhausted(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CRASH_AFTER, "1")
    client = make_client(acp_max_restarts=1, max_retries=0)
    for _ in range(2):
        with pytest.raises(AgentCrashError) as info:
            await client.generate("auto", "hi")
        assert info.value.code == "agent_crashed"
    with pytest.raises(AgentCrashError) as info:
        await client.generate("auto", "hi")
    assert info.value.code == "agent_restarts_exhausted" and not info.value.retryable
    assert "CURSORPIPE_ACP_MAX_RESTARTS" in str(info.value)


async def test_startup_timeout(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HANG_INITIALIZE, "1")
    client = make_client(acp_startup_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(AgentStartupError):
        await client.warmup(1)
    assert time.monotonic() - start < 5


async def test_missing_binary(tmp_path: object) -> None:
    from cursorpipe import CursorClient, CursorPipeConfig

    async with CursorClient(CursorPipeConfig(strategy="acp", agent_bin="/nonexistent/agent")) as client:
        with pytest.raises(AgentNotFoundError):
            await client.generate("auto", "hi")


async def test_close_stops_the_process(make_client: MakeClient) -> None:
    client = make_client()
    await client.warmup(1)
    transport = await _transport(client)
    pid = transport.pid
    assert pid is not None
    await client.close()
    assert transport.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_stdout_noise_is_tolerated(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_STDOUT_NOISE, "1")
    client = make_client()
    assert await client.generate("auto", "hi") == expected_reply("hi")
    transport = await _transport(client)
    assert transport._conn is not None and transport._conn.noise_lines == 1


async def _kill_and_wait_for_restart(transport: AcpTransport) -> None:
    old_pid = transport.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    for _ in range(500):  # the agent is restarted in the background
        if transport.pid not in (None, old_pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("agent acp was not restarted")


async def test_session_survives_an_agent_restart(make_client: MakeClient, record: Record) -> None:
    client = make_client(max_retries=0)
    transport = await _transport(client)
    async with client.session("gpt-5") as session:
        assert (await session.prompt("one")).text == expected_reply("one")
        await _kill_and_wait_for_restart(transport)
        # acp.md §3.1: the new process loads the stored session; the history is intact.
        second = await session.prompt("two")
        assert second.text == expected_reply("two", ["one"])
        assert session.session_id == record.calls("session/load")[0]["sessionId"]
    assert transport.restarts == 1
    assert len({p["sessionId"] for p in record.calls("session/prompt")}) == 1
    # The stored session came back in ask mode and on its model: nothing had to be switched again.
    switches = [(p["configId"], p["sessionId"]) for p in record.calls("session/set_config_option")]
    assert switches == [("mode", session.session_id), ("model", session.session_id)]


async def test_session_is_lost_when_it_cannot_be_reloaded(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "state"))
    client = make_client(max_retries=0)
    transport = await _transport(client)
    session = await client.create_session("auto")
    assert (await session.prompt("one")).text == expected_reply("one")
    shutil.rmtree(tmp_path / "state")  # the agent's session store is gone
    await _kill_and_wait_for_restart(transport)
    with pytest.raises(SessionError, match="open a new session") as info:
        await session.prompt("two")
    assert info.value.code == "session_lost"
    await session.discard()
    async with client.session("auto") as fresh:
        assert (await fresh.prompt("three")).text == expected_reply("three")


async def test_network_failure_is_typed(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NETWORK_ERROR, "1")
    client = make_client(max_retries=0)
    with pytest.raises(NetworkError, match="could not reach Cursor") as info:
        await client.generate("auto", "hi")
    assert info.value.retryable and info.value.transport == "acp"


async def test_invalid_api_key_surfaces_as_a_session_error(
    make_client: MakeClient, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    # acp.md §3.1: with an invalid CURSOR_API_KEY, session/new keeps failing "Failed to initialize
    # session services"; after the retries the caller gets a typed error pointing at the key.
    monkeypatch.setenv(ENV_EXPECT_API_KEY, "crsr_the_right_key_000")
    client = make_client(api_key=API_KEY, max_retries=0)
    with pytest.raises(SessionError, match="CURSOR_API_KEY") as info:
        await client.generate("auto", "hi")
    assert info.value.code == "session_services_unavailable"
    assert API_KEY not in str(info.value)
    assert len(record.calls("session/new")) == 3


async def test_authenticate_waiting_for_a_browser_is_an_auth_error(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCOUNT, "logged_out")
    monkeypatch.setenv(ENV_AUTH_WAITS, "1")
    client = make_client(acp_startup_timeout_s=2.0)
    with pytest.raises(AuthenticationError, match="browser login"):
        await client.generate("auto", "hi")
