"""The subprocess transport end to end: CursorClient(strategy="subprocess") against the fake agent."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import (
    AgentCrashError,
    AgentNotFoundError,
    AgentTimeoutError,
    AuthenticationError,
    ChatMessage,
    ConfigurationError,
    CursorPipeConfig,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    StreamDroppedError,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    Usage,
    UsageEvent,
    UsageLimitError,
)
from cursorpipe.testing.fake_agent import catalog as cat
from cursorpipe.transports.subprocess import SubprocessTransport
from cursorpipe.transports.subprocess._prompt import flatten_messages

KEY = "crsr_subprocess_test_key_0123456789"


def cat_usage(prompt: str, reply: str, history: list[str] | None = None) -> Usage:
    u = cat.usage_for(prompt, reply, history or [])
    return Usage(
        input_tokens=u["inputTokens"],
        output_tokens=u["outputTokens"],
        cache_read_tokens=u["cacheReadTokens"],
        cache_write_tokens=u["cacheWriteTokens"],
    )


async def wait_for_record(record: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.entries():
            return record.last()  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError("the fake agent never started")


async def drain(stream: AsyncIterator[str], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def wait_gone(alive: Any, pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


# ----------------------------------------------------------------------------------------------
# happy paths
# ----------------------------------------------------------------------------------------------
async def test_generate_complete_and_usage(make_client: Any, record: Any) -> None:
    async with make_client() as client:
        assert await client.generate("auto", "hello there") == cat.expected_reply("hello there")
        result = await client.complete("gpt-5", prompt="with usage")
    reply = cat.expected_reply("with usage")
    assert result.text == reply and result.transport == "subprocess" and result.fallback_from == ()
    assert result.thinking == cat.expected_thinking("with usage")
    assert result.usage == cat_usage("with usage", reply) and not result.usage.estimated
    entry = record.last()
    assert entry["model"] == "gpt-5" and entry["mode"] == "ask" and entry["trust"] is True
    assert entry["output_format"] == "stream-json" and entry["partial"] is True
    assert entry["prompt_source"] == "argv" and entry["api_key_source"] == "login"


async def test_stream_has_no_duplicates_and_events_are_ordered(make_client: Any) -> None:
    async with make_client() as client:
        chunks = [c async for c in client.stream("auto", "stream me please")]
        events = [e async for e in client.events("auto", prompt="ordered")]
    assert "".join(chunks) == cat.expected_reply("stream me please") and len(chunks) > 3
    assert isinstance(events[0], TransportInfo) and events[0].transport == "subprocess"
    kinds = [type(e) for e in events]
    assert kinds.index(ThinkingDelta) < kinds.index(TextDelta)
    assert isinstance(events[-1], TurnEnd) and isinstance(events[-2], UsageEvent)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == cat.expected_reply("ordered")


async def test_tool_call_segments_are_deduplicated(make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cat.ENV_TOOL_CALL, "1")
    async with make_client() as client:
        assert await client.generate("auto", "read a file first") == cat.expected_reply("read a file first")


async def test_chat_with_history_is_flattened(make_client: Any, record: Any) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "hello Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    async with make_client() as client:
        text = await client.chat("auto", messages)
    flat = flatten_messages([ChatMessage.of(m["role"], m["content"]) for m in messages])  # type: ignore[arg-type]
    assert text == cat.expected_reply(flat)
    head = record.last()["prompt_head"]
    assert "be brief" in head and "my name is Ada" in head and "hello Ada" in head


async def test_sessions_resume_and_keep_history_apart(make_client: Any, record: Any) -> None:
    client = make_client()
    async with client, client.session("auto") as first, client.session("composer-2") as second:
        assert re.fullmatch(r"[0-9a-f-]{36}", first.session_id)
        assert first.session_id != second.session_id
        assert (await first.prompt("one")).text == cat.expected_reply("one")
        assert (await second.prompt("alpha")).text == cat.expected_reply("alpha")
        r2 = await first.prompt("two")
        assert r2.text == cat.expected_reply("two", ["one"])
        assert r2.session_id == first.session_id
        assert r2.usage.cache_read_tokens > 0
        r3 = await second.prompt("beta")
        assert r3.text == cat.expected_reply("beta", ["alpha"])
        assert first.transport_name == "subprocess"
    resumes = [e["resume"] for e in record.entries()]
    assert resumes == [first.session_id, second.session_id, first.session_id, second.session_id]
    assert [e["model"] for e in record.entries()] == ["auto", "composer-2", "auto", "composer-2"]


async def test_session_without_create_chat_learns_the_id(make_client: Any, wrapper: Any, record: Any) -> None:
    agent = wrapper(
        'if [ "$1" = create-chat ]; then echo "error: unknown command \'create-chat\'" >&2; exit 1; fi'
    )
    async with make_client(agent_bin=agent) as client, client.session("auto") as session:
        placeholder = session.session_id
        assert placeholder.startswith("subprocess-pending-")
        await session.prompt("one")
        learnt = session.session_id
        assert re.fullmatch(r"[0-9a-f-]{36}", learnt)
        assert (await session.prompt("two")).text == cat.expected_reply("two", ["one"])
    assert [e["resume"] for e in record.entries()] == [None, learnt]


async def test_discarded_session_is_refused(make_client: Any) -> None:
    async with make_client() as client:
        session = await client.create_session("auto")
        await session.discard()
        with pytest.raises(SessionError):
            await session.prompt("x")


async def test_list_models(make_client: Any) -> None:
    async with make_client() as client:
        models = await client.list_models()
    assert [m.id for m in models] == [m.cli_id for m in cat.MODELS if m.routable]
    assert all(m.display_name for m in models)
    assert not any("Tip" in m.id or "Available" in m.id for m in models)


async def test_list_models_logged_out(make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cat.ENV_ACCOUNT, "logged_out")
    async with make_client() as client:
        with pytest.raises(AuthenticationError):
            await client.list_models()


async def test_mode_and_workspace(make_client: Any, record: Any, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    async with make_client(default_mode="plan", workspace=str(workspace)) as client:
        await client.generate("auto", "x")
    entry = record.last()
    assert entry["mode"] == "plan" and entry["cwd"] == str(workspace) and entry["workspace"] == str(workspace)
    async with make_client() as client:
        await client.generate("auto", "y")
        transport = await client.transport()
        private = record.last()["cwd"]
        assert isinstance(transport, SubprocessTransport)
    assert record.last()["workspace"] is None
    assert "cursorpipe-agent-" in private and not os.path.exists(private)


# ----------------------------------------------------------------------------------------------
# prompts and secrets
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_one_megabyte_prompt(make_client: Any, record: Any) -> None:
    prompt = "0123456789abcdef" * 65536  # 1 MiB
    async with make_client() as client:
        text = await client.generate("auto", prompt)
    assert text == cat.expected_reply(prompt)
    entry = record.last()
    assert entry["prompt_source"] == "stdin" and entry["prompt_chars"] == len(prompt)


@pytest.mark.parametrize("prompt", ["-rf /", "--help", "--model gpt-5", "-", "--"])
async def test_prompts_that_look_like_options(make_client: Any, record: Any, prompt: str) -> None:
    async with make_client() as client:
        assert await client.generate("auto", prompt) == cat.expected_reply(prompt)
    assert record.last()["prompt_source"] == "argv" and record.last()["model"] == "auto"


async def test_api_key_travels_in_env_not_argv(
    make_client: Any, record: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_ACCOUNT, "logged_out")
    monkeypatch.setenv(cat.ENV_EXPECT_API_KEY, KEY)
    monkeypatch.setenv(cat.ENV_HANG_AFTER, "1")
    async with make_client(api_key=KEY, request_timeout_s=20) as client:
        task = asyncio.create_task(client.generate("auto", "secret check"))
        entry = await wait_for_record(record)
        pid = entry["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert b"--api-key" not in cmdline and KEY.encode() not in cmdline
    assert f"CURSOR_API_KEY={KEY}".encode() in environ.split(b"\0")
    assert entry["api_key_source"] == "env" and entry["env_has_api_key"] is True


async def test_wrong_key_is_an_authentication_error(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_EXPECT_API_KEY, KEY)
    async with make_client(api_key="crsr_wrong_key_999999") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("auto", "x")
    assert "crsr_wrong_key_999999" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "cls"),
    [
        ({cat.ENV_ACCOUNT: "logged_out"}, AuthenticationError),
        ({cat.ENV_ACCOUNT: "usage_limit"}, UsageLimitError),
        ({cat.ENV_ACCOUNT: "rate_limited"}, RateLimitError),
        ({cat.ENV_NETWORK_ERROR: "1"}, NetworkError),
        ({cat.ENV_INBAND_ERROR: "resource_exhausted"}, RateLimitError),
        ({cat.ENV_INBAND_ERROR: "usage_limit"}, UsageLimitError),
        ({cat.ENV_INBAND_ERROR: "model_not_found"}, ModelNotFoundError),
        ({cat.ENV_INBAND_ERROR: "writable_closed"}, StreamDroppedError),
    ],
)
async def test_errors_are_classified(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], cls: type
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with make_client() as client:
        with pytest.raises(cls) as info:
            await client.generate("auto", "x")
    assert type(info.value) is cls and info.value.transport == "subprocess"
    if cat.ENV_INBAND_ERROR in env:
        assert info.value.details.get("inband") is True


async def test_inband_error_text_is_not_answer_text(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_INBAND_ERROR, "resource_exhausted")
    seen: list[str] = []
    async with make_client() as client:
        with pytest.raises(RateLimitError):
            await drain(client.stream("auto", "partial then error"), seen)
    assert "".join(seen).strip() == cat.expected_reply("partial then error")
    assert "resource_exhausted" not in "".join(seen)


async def test_unknown_model(make_client: Any) -> None:
    async with make_client() as client:
        with pytest.raises(ModelNotFoundError) as info:
            await client.generate("gpt-99", "x")
    assert info.value.model == "gpt-99" and "auto" in info.value.available
    assert info.value.transport_failure is False


async def test_crash_mid_stream_reports_exit_code_and_redacted_stderr(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_CRASH_AFTER, "2")
    monkeypatch.setenv(cat.ENV_CRASH_CODE, "7")
    got: list[str] = []
    async with make_client(api_key=KEY) as client:
        with pytest.raises(AgentCrashError) as info:
            await drain(client.stream("composer-2", "crash please"), got)
    err = info.value
    assert err.exit_code == 7 and err.transport_failure and "FATAL" in err.stderr
    assert KEY not in err.stderr and KEY not in str(err)
    assert "".join(got) == "".join(cat.reply_chunks(cat.expected_reply("crash please"))[:2])


async def test_crash_before_output_is_retried_by_the_client(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, wrapper: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "crashed-once"
    agent = wrapper(f'if [ ! -e "{flag}" ]; then touch "{flag}"; echo "boom" >&2; exit 9; fi')
    async with make_client(agent_bin=agent, max_retries=1) as client:
        assert await client.generate("auto", "second time lucky") == cat.expected_reply("second time lucky")
    assert flag.exists()


async def test_error_printed_on_stdout_is_classified(make_client: Any, wrapper: Any) -> None:
    # Some builds print warnings and errors on stdout instead of stderr (acp.md §5).
    agent = wrapper(f'if [ "$1" = --print ]; then echo "{cat.INVALID_API_KEY_TEXT}"; exit 1; fi')
    async with make_client(agent_bin=agent) as client:
        with pytest.raises(AuthenticationError):
            await client.generate("auto", "x")


async def test_sigkilled_agent_gives_a_typed_error_and_the_next_request_works(
    make_client: Any, record: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_LATENCY, "0.2")
    async with make_client() as client:
        got: list[str] = []

        async def consume() -> None:
            await drain(client.stream("composer-2", "kill me halfway through this answer"), got)

        task = asyncio.create_task(consume())
        pid = (await wait_for_record(record))["pid"]
        while not got:
            await asyncio.sleep(0.02)
        start = time.monotonic()
        os.kill(pid, 9)
        with pytest.raises(AgentCrashError) as info:
            await task
        assert time.monotonic() - start < 3
        assert info.value.exit_code == -9 and "signal 9" in str(info.value)
        monkeypatch.setenv(cat.ENV_LATENCY, "0")
        assert await client.generate("auto", "next one") == cat.expected_reply("next one")


async def test_images_and_missing_agent(make_client: Any, tmp_path: Path) -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    msg = {
        "role": "user",
        "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": png}}],
    }
    async with make_client() as client:
        with pytest.raises(ConfigurationError, match="images"):
            await client.chat("auto", [msg])
    async with make_client(agent_bin=str(tmp_path / "no-such-agent")) as client:
        with pytest.raises(AgentNotFoundError):
            await client.generate("auto", "x")


# ----------------------------------------------------------------------------------------------
# process hygiene
# ----------------------------------------------------------------------------------------------
async def test_timeout_kills_the_process(
    make_client: Any, record: Any, alive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_HANG_AFTER, "1")
    async with make_client() as client:
        start = time.monotonic()
        with pytest.raises(AgentTimeoutError):
            await client.generate("auto", "hang", timeout_s=1.0)
        assert time.monotonic() - start < 8
        transport = await client.transport()
        assert isinstance(transport, SubprocessTransport) and transport.running_pids == []
    assert await wait_gone(alive, record.last()["pid"])


async def test_cancellation_kills_the_process(
    make_client: Any, record: Any, alive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_LATENCY, "0.2")
    async with make_client() as client:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in client.stream("composer-2", "a long answer that takes a while to stream out"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        pid = record.last()["pid"]
        assert alive(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_gone(alive, pid)
        assert client.active_requests == 0


async def test_breaking_out_of_a_stream_kills_the_process(
    make_client: Any, record: Any, alive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_LATENCY, "0.2")
    async with make_client() as client:
        async with aclosing(client.stream("composer-2", "stop early please, thank you kindly")) as stream:
            async for _ in stream:
                break
        assert await wait_gone(alive, record.last()["pid"])


async def test_agent_that_never_exits_after_result(
    make_client: Any, record: Any, alive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_NO_EXIT, "1")
    async with make_client() as client:
        start = time.monotonic()
        assert await client.generate("auto", "done?") == cat.expected_reply("done?")
        assert time.monotonic() - start < 6
    assert await wait_gone(alive, record.last()["pid"])


async def test_usage_absent_is_estimated_and_top_level_is_read(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cat.ENV_USAGE_SHAPE, "none")
    async with make_client() as client:
        estimated = (await client.complete("auto", prompt="count me")).usage
    assert estimated.estimated and estimated.output_tokens > 0
    monkeypatch.setenv(cat.ENV_USAGE_SHAPE, "top")
    async with make_client() as client:
        top = (await client.complete("auto", prompt="count me")).usage
    assert top == cat_usage("count me", cat.expected_reply("count me"))


async def test_transport_direct_use_and_close(agent_bin: str) -> None:
    transport = SubprocessTransport(CursorPipeConfig(agent_bin=agent_bin))
    caps = transport.capabilities
    assert caps.sessions and not caps.native_tools and caps.real_usage and not caps.images
    await transport.start()
    await transport.aclose()
    with pytest.raises(SessionError):
        await transport.list_models()


@pytest.mark.slow
async def test_concurrent_requests_do_not_cross_talk(make_client: Any, alive: Any, record: Any) -> None:
    prompts = [f"concurrent prompt number {i}" for i in range(12)]
    async with make_client() as client:
        answers = await asyncio.gather(*(client.generate("auto", p) for p in prompts))
        transport = await client.transport()
        assert isinstance(transport, SubprocessTransport) and transport.running_pids == []
    assert answers == [cat.expected_reply(p) for p in prompts]
    pids = [e["pid"] for e in record.entries()]
    assert len(set(pids)) == 12 and not any(alive(pid) for pid in pids)
