"""The connect transport end to end against the emulator, over RunSSE + BidiAppend ("never") and
the full-duplex HTTP/2 Run over h2c ("always"): streaming, chat with history and system prompt,
sessions, models, every injected fault, cancellation, token refresh, and no secrets in logs."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.errors import (
    AuthenticationError,
    ConfigurationError,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    RateLimitError,
    StreamDroppedError,
    StreamStalledError,
    UsageLimitError,
)
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply
from cursorpipe.transports.connect import CLIENT_TYPE, CLIENT_VERSION, ConnectTransport
from cursorpipe.types import TextDelta, ThinkingDelta, TransportInfo, TurnEnd, UsageEvent

MODES = ["never", "always"]
CHANNEL = {"never": "runsse", "always": "run"}


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


def make_client(emu: Emulator, mode: str, **transport_kw: Any) -> tuple[CursorClient, ConnectTransport]:
    config = CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=mode, max_retries=0
    )
    transport = ConnectTransport(config, **transport_kw)
    return CursorClient(config, transport=transport), transport


def run_headers(emu: Emulator) -> list[dict[str, str]]:
    return [r.headers for r in emu.requests if r.path.endswith(("/RunSSE", "/Run"))]


# ---------------------------------------------------------------------------------------------
# the happy paths
# ---------------------------------------------------------------------------------------------
async def test_default_client_just_works(emu: Emulator) -> None:
    async with CursorClient(
        CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key)
    ) as c:
        assert await c.generate("composer-2", "hi") == expected_reply("hi")
        assert c.transport_name == "connect"


@pytest.mark.parametrize("mode", MODES)
async def test_stream_events(emu: Emulator, mode: str) -> None:
    client, transport = make_client(emu, mode)
    async with client:
        events = [e async for e in client.events("composer-2", prompt="stream me")]
    assert isinstance(events[0], TransportInfo) and events[0].transport == "connect"
    assert isinstance(events[-1], TurnEnd) and isinstance(events[-2], UsageEvent)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert text == expected_reply("stream me")
    assert thinking and sum(isinstance(e, TextDelta) for e in events) > 1
    usage = events[-1].usage
    assert usage is not None and not usage.estimated and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.reasoning_tokens == emu.runs[-1].usage["reasoning_tokens"]
    assert transport.last_channel == CHANNEL[mode]
    assert emu.runs[-1].transport == CHANNEL[mode]


@pytest.mark.parametrize("mode", MODES)
async def test_chat_history_and_system_prompt_reach_the_model(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    async with client:
        answer = await client.chat(
            "composer-2",
            [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ],
        )
    assert answer == expected_reply(
        "second question", earlier=2, first="first question", system="Answer briefly."
    )
    run = emu.runs[-1]
    assert run.system_texts == ["Answer briefly."]
    assert ("assistant", "first answer") in run.history


@pytest.mark.parametrize("mode", MODES)
async def test_session_keeps_history(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    async with client, client.session("composer-2") as session:
        first = await session.prompt("one")
        second = await session.prompt("two")
        assert first.text == expected_reply("one")
        assert second.text == expected_reply("two", earlier=2, first="one", turns=1)
        assert first.session_id == second.session_id == session.session_id
    r1, r2 = (r.run_request for r in emu.runs[-2:])
    assert r1 is not None and r2 is not None
    assert r1.conversation_id == r2.conversation_id == session.session_id
    assert r1.conversation_state.ByteSize() == 0 and r2.conversation_state.ByteSize() > 0
    # Only the new message travels; no history field is used inside a session.
    assert r2.action.user_message_action.user_message.text == "two"
    assert not r2.action.user_message_action.HasField("conversation_history")
    h1, h2 = run_headers(emu)[-2:]
    assert h1["x-blob-encryption-key"] == h2["x-blob-encryption-key"]
    assert re.fullmatch(r"[0-9a-f]{64}", h1["x-blob-encryption-key"])
    assert h1["x-original-request-id"] == r1.run_id != r2.run_id == h2["x-original-request-id"]


@pytest.mark.parametrize("mode", MODES)
async def test_headers_and_appends(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    async with client:
        await client.generate("composer-2", "headers")
    (headers,) = run_headers(emu)
    assert headers["x-cursor-client-type"] == CLIENT_TYPE
    assert headers["x-cursor-client-version"] == CLIENT_VERSION
    assert headers["x-ghost-mode"] == "true"
    assert headers["connect-protocol-version"] == "1"
    assert headers["content-type"] == "application/connect+proto"
    assert headers["x-cursor-agent-allowed-tools"] == ""
    assert headers["x-request-id"] == headers["x-original-request-id"]  # first attempt (§4.2)
    assert headers["authorization"].startswith("Bearer ") and emu.api_key not in headers["authorization"]
    run = emu.runs[-1]
    assert run.run_request is not None
    assert run.run_request.action.user_message_action.user_message.mode == pb.AGENT_MODE_ASK
    assert run.run_request.requested_model.model_id == "composer-2"
    assert run.run_request.HasField("next_interaction_query_id")
    if mode == "never":
        assert headers["x-cursor-streaming"] == "true"
        appends = [r for r in emu.requests if r.path.endswith("/BidiAppend")]
        assert [a.seqno for a in appends] == list(range(len(appends)))
        assert {a.headers["x-request-id"] for a in appends} == {headers["x-request-id"]}
        assert all(a.headers["content-type"] == "application/proto" for a in appends)
        assert {a.headers["x-blob-encryption-key"] for a in appends} == {headers["x-blob-encryption-key"]}
    else:
        assert "x-cursor-streaming" not in headers


@pytest.mark.parametrize("mode", MODES)
async def test_blob_store_query_and_execs_answered(mode: str) -> None:
    behaviour = Behaviour(
        blob_round_trip=True,
        interaction_query="web_search",
        extra_exec={"name": "fs", "tool_name": "read", "args": {}},
        gzip_frames=True,
    )
    async with Emulator(behaviour) as emu:
        client, _ = make_client(emu, mode)
        async with client:
            # live-dialect.md row 12: web search is approved.
            assert await client.generate("composer-2", "tools?") == expected_reply(
                "tools?", queries=[("web_search", "approved")]
            )
    run = emu.runs[-1]
    assert run.blob_round_trip_ok is True
    (resp,) = run.interaction_responses
    assert resp.web_search_request_response.HasField("approved")
    results = [m for m in run.exec_answers if m.WhichOneof("message") == "exec_client_message"]
    assert results and results[0].exec_client_message.request_context_result.HasField("success")
    # An MCP tool nobody offered gets tool_not_found, as the SDK answers.
    (unknown,) = [m for m in results if m.exec_client_message.HasField("mcp_result")]
    assert unknown.exec_client_message.mcp_result.tool_not_found.name == "read"


@pytest.mark.parametrize("mode", MODES)
async def test_client_heartbeats(mode: str) -> None:
    async with Emulator(Behaviour(token_delay_s=0.1, chunks=4)) as emu:
        client, _ = make_client(emu, mode, heartbeat_s=0.05)
        async with client:
            await client.generate("composer-2", "slow")
    assert emu.runs[-1].client_heartbeats >= 2


@pytest.mark.parametrize("mode", MODES)
async def test_images_reach_the_run_request(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    # 400 KB: larger than HTTP/2's default 64 KiB flow-control window, so h2 must wait for updates.
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 1600).decode()
    png = f"data:image/png;base64,{big}"
    async with client:
        await client.chat(
            "composer-2",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see"},
                        {"type": "image_url", "image_url": {"url": png}},
                    ],
                }
            ],
        )
    run = emu.runs[-1]
    assert run.run_request is not None
    raw = run.run_request.action.user_message_action.user_message.SerializeToString()
    assert b"\x89PNG" in raw and b"image/png" in raw and len(raw) > 400_000


async def test_concurrent_turns_share_one_h2_connection(emu: Emulator) -> None:
    client, transport = make_client(emu, "always")
    async with client:
        answers = await asyncio.gather(*(client.generate("composer-2", f"q{i}") for i in range(5)))
        assert answers == [expected_reply(f"q{i}") for i in range(5)]
        assert transport._h2 is not None and transport._h2.streams_opened == 5
    assert emu.tokens_issued == 1


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
async def test_list_models(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    async with client:
        models = await client.list_models()
    assert [m.id for m in models] == emu.models
    sonnet = next(m for m in models if m.id == "claude-4.5-sonnet")
    assert sonnet.display_name == "Claude 4.5 Sonnet" and "sonnet-4.5" in sonnet.aliases
    assert any(p.get("id") == "thinking" for p in sonnet.parameters)
    rest = [r for r in emu.requests if r.path == "/v1/models"]
    assert rest and rest[0].headers["authorization"] == f"Bearer {emu.api_key}"  # raw key (§9.1)


async def test_models_fall_back_to_rpc(emu: Emulator) -> None:
    # An access token only (no API key): the REST list needs the raw key, so the RPC is used.
    token_client, _ = make_client(emu, "never")
    async with token_client:
        token = await (await token_client.transport()).auth.token()  # type: ignore[attr-defined]
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, auth_token=token, use_http2="never")
    async with CursorClient(config) as client:
        models = await client.list_models()
        assert {m.id for m in models} == set(emu.models)
        assert await client.generate("gpt5", "alias") == expected_reply("alias")
    assert any(r.path.endswith("/GetUsableModels") for r in emu.requests)
    assert emu.runs[-1].run_request is not None
    assert emu.runs[-1].run_request.requested_model.model_id == "gpt-5"  # canonical id sent


async def test_model_variant_parameters_are_sent(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    async with client:
        assert await client.generate("sonnet-4.5[thinking=true]", "think") == expected_reply("think")
        with pytest.raises(ConfigurationError, match="thinking"):
            await client.generate("claude-4.5-sonnet[speed=fast]", "x")
    rm = emu.runs[-1].run_request.requested_model  # type: ignore[union-attr]
    assert rm.model_id == "claude-4.5-sonnet" and not rm.max_mode
    assert [(p.id, p.value) for p in rm.parameters] == [("thinking", "true")]


async def test_unknown_model_rejected_before_the_run(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    async with client:
        with pytest.raises(ModelNotFoundError) as info:
            await client.generate("no-such-model", "hi")
    assert "composer-2" in info.value.available and "composer-2" in str(info.value)
    assert emu.runs == []


@pytest.mark.parametrize("mode", MODES)
async def test_bad_model_from_server(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.BAD_MODEL)
    async with client:
        with pytest.raises(ModelNotFoundError) as info:
            await client.generate("composer-2", "hi")
    assert "gpt-5" in info.value.available


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_usage_limit(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.USAGE_LIMIT)
    async with client:
        with pytest.raises(UsageLimitError) as info:
            await client.generate("composer-2", "hi")
    assert not info.value.retryable and info.value.transport == "connect"


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limit_with_retry_after(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.RATE_LIMIT, retry_after=7)
    async with client:
        with pytest.raises(RateLimitError) as info:
            await client.generate("composer-2", "hi")
    assert info.value.retryable and info.value.retry_after == 7
    assert not isinstance(info.value, UsageLimitError)


async def test_rate_limit_retried_by_the_client(emu: Emulator) -> None:
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=1)
    emu.inject(Fault.RATE_LIMIT, retry_after=0.05)
    async with CursorClient(config) as client:
        assert await client.generate("composer-2", "again") == expected_reply("again")
    assert len(emu.runs) == 2


async def test_outdated_client(emu: Emulator) -> None:
    # An explicitly chosen dialect surfaces the version gate typed ...
    config = CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0, connect_dialect="cli"
    )
    emu.inject(Fault.OUTDATED_CLIENT)
    async with CursorClient(config) as client:
        with pytest.raises(OutdatedClientError):
            await client.generate("composer-2", "hi")
    # ... while the default switches to the other dialect and answers (live-dialect.md row 1).
    client, transport = make_client(emu, "never")
    emu.inject(Fault.OUTDATED_CLIENT)
    async with client:
        assert await client.generate("composer-2", "hi") == expected_reply("hi")
    assert transport.wire.dialect == "sdk"
    assert run_headers(emu)[-1]["x-cursor-client-type"] == "sdk"


async def test_unavailable_is_retryable_network_error(emu: Emulator) -> None:
    client, _ = make_client(emu, "always")
    emu.inject(Fault.UNAVAILABLE)
    async with client:
        with pytest.raises(NetworkError) as info:
            await client.generate("composer-2", "hi")
    assert info.value.retryable


@pytest.mark.parametrize("mode", MODES)
async def test_unauthenticated_run_reexchanges_once(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.UNAUTHENTICATED)
    async with client:
        assert await client.generate("composer-2", "hi") == expected_reply("hi")
    assert emu.tokens_issued == 2 and len(emu.runs) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_expired_token_is_reexchanged(mode: str) -> None:
    # Our clock is frozen, so the cached token still looks fresh to us; the server says it expired.
    frozen = 1_000.0
    async with Emulator(Behaviour(token_lifetime_s=0.5)) as emu:
        client, _ = make_client(emu, mode, clock=lambda: frozen)
        async with client:
            assert await client.generate("composer-2", "one") == expected_reply("one")
            await asyncio.sleep(1.6)  # the emulator rounds exp up to a whole second
            assert await client.generate("composer-2", "two") == expected_reply("two")
    assert emu.tokens_issued == 2


async def test_unauthenticated_twice_fails(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    emu.inject(Fault.UNAUTHENTICATED, times=2)
    async with client:
        with pytest.raises(AuthenticationError):
            await client.generate("composer-2", "hi")
    assert len(emu.runs) == 2


async def test_bad_api_key(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key="crsr_wrong_key_123456")
    async with CursorClient(config) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("composer-2", "hi")
    assert "crsr_wrong_key_123456" not in str(info.value) and "CURSOR_API_KEY" in str(info.value)
    assert "crsr_wrong_key_123456" not in caplog.text


async def test_no_credentials_says_what_to_do(emu: Emulator) -> None:
    async with CursorClient(CursorPipeConfig(strategy="connect", backend_url=emu.url)) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("composer-2", "hi")
    assert "CURSOR_API_KEY" in str(info.value) and "agent login" in str(info.value)
    assert emu.runs == []


async def test_exchange_401(emu: Emulator) -> None:
    client, _ = make_client(emu, "never")
    emu.inject(Fault.UNAUTHENTICATED_EXCHANGE)
    async with client:
        with pytest.raises(AuthenticationError):
            await client.generate("composer-2", "hi")


@pytest.mark.parametrize("mode", MODES)
async def test_drop_mid_stream_resumes_once(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.DROP_MID_STREAM)
    async with client:
        text = await client.generate("composer-2", "drop me")
    assert text == expected_reply("drop me")  # no duplicated prefix after the resume
    first, second = emu.runs[-2:]
    assert first.outcome == "dropped"
    assert second.run_request is not None and second.run_request.action.HasField("resume_action")
    assert first.run_request is not None and second.run_request.run_id == first.run_request.run_id
    assert first.request_id != second.request_id


@pytest.mark.parametrize("mode", MODES)
async def test_drop_twice_raises_stream_dropped(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode)
    emu.inject(Fault.DROP_MID_STREAM, times=2)
    seen: list[str] = []

    async def consume() -> None:
        async for chunk in client.stream("composer-2", "drop me"):
            seen.append(chunk)

    async with client:
        with pytest.raises(StreamDroppedError) as info:
            await consume()
    assert info.value.retryable and seen
    assert expected_reply("drop me").startswith("".join(seen))


@pytest.mark.parametrize("mode", MODES)
async def test_stall(emu: Emulator, mode: str) -> None:
    client, _ = make_client(emu, mode, stall_timeout_s=0.3)
    emu.inject(Fault.STALL)
    async with client:
        with pytest.raises(StreamStalledError) as info:
            await client.generate("composer-2", "stall")
    assert info.value.retryable and info.value.request_id


# ---------------------------------------------------------------------------------------------
# cancellation and cleanup
# ---------------------------------------------------------------------------------------------
async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _cancel_sent(emu: Emulator) -> bool:
    run = emu.runs[-1] if emu.runs else None
    return run is not None and any(
        m.WhichOneof("message") == "conversation_action"
        and m.conversation_action.WhichOneof("action") == "cancel_action"
        for m in run.client_messages
    )


def _other_tasks() -> set[asyncio.Task[Any]]:
    """Our own background tasks (all named cursorpipe-*); the emulator's server tasks share the loop."""
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("cursorpipe-") and not t.done()}


@pytest.mark.parametrize("mode", MODES)
async def test_closing_the_stream_drops_it_at_once(emu: Emulator, mode: str) -> None:
    emu.behaviour.token_delay_s = 0.3
    emu.behaviour.chunks = 20
    client, transport = make_client(emu, mode)
    before = _other_tasks()
    async with client:
        async with aclosing(client.stream("composer-2", "long answer")) as stream:
            async for _chunk in stream:
                break
        # live-dialect.md row 11: dropped like the SDK's run.cancel(), no cancel_action.
        await _wait_for(lambda: emu.runs[-1].finished)
        assert emu.runs[-1].outcome == "disconnected" and not _cancel_sent(emu)
        assert client.active_requests == 0
        assert _other_tasks() - before <= _h2_reader(transport)
        _assert_no_open_calls(transport)
    await asyncio.sleep(0)
    assert not (_other_tasks() - before)


def _assert_no_open_calls(transport: ConnectTransport) -> None:
    """No HTTP/2 stream and no in-use httpx connection is left behind."""
    if transport._h2 is not None:
        assert transport._h2._streams == {}
    pool = transport._http._transport._pool  # type: ignore[attr-defined]
    assert all(c.is_idle() or c.is_closed() for c in pool.connections)


def _h2_reader(transport: ConnectTransport) -> set[asyncio.Task[Any]]:
    conn = transport._h2
    return {conn._task} if conn is not None and conn._task is not None else set()


@pytest.mark.parametrize("mode", MODES)
async def test_task_cancellation_drops_the_stream(emu: Emulator, mode: str) -> None:
    emu.behaviour.token_delay_s = 0.3
    emu.behaviour.chunks = 20
    client, transport = make_client(emu, mode)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _chunk in client.stream("composer-2", "long answer"):
            got_first.set()

    before = _other_tasks()
    async with client:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_for(lambda: emu.runs[-1].finished)
        assert emu.runs[-1].outcome == "disconnected" and not _cancel_sent(emu)
        _assert_no_open_calls(transport)
        emu.behaviour.token_delay_s = 0.0
        # The transport still works after a cancelled turn.
        assert await client.generate("composer-2", "after") == expected_reply("after")
    await asyncio.sleep(0)
    assert not (_other_tasks() - before)


async def test_aclose_idempotent_and_closed_errors(emu: Emulator) -> None:
    client, transport = make_client(emu, "always")
    await transport.start()
    assert transport._h2 is not None and transport._h2.alive
    await transport.aclose()
    await transport.aclose()
    assert transport._h2 is None
    with pytest.raises(Exception, match="closed"):
        await transport.list_models()
    await client.close()


# ---------------------------------------------------------------------------------------------
# tokens and secrets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_token_refresh_between_and_during_turns(emu: Emulator, mode: str) -> None:
    clock = Clock()
    client, _ = make_client(emu, mode, clock=clock)
    async with client, client.session("composer-2") as session:
        await session.prompt("one")
        assert emu.tokens_issued == 1
        clock.offset += 3500  # past exp - 5 min of the emulator's 1 h tokens
        # Concurrent turns after expiry share one refresh (single flight).
        results = await asyncio.gather(session.prompt("two"), client.generate("composer-2", "x"))
        assert results[0].text == expected_reply("two", earlier=2, first="one", turns=1)
        assert emu.tokens_issued == 2
    tokens = {h["authorization"] for h in run_headers(emu)}
    assert len(tokens) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_token_refresh_mid_run(mode: str) -> None:
    # 1 s tokens refresh at half-life; a 2+ s turn with 0.2 s heartbeats keeps sending.
    async with Emulator(Behaviour(token_lifetime_s=1.0, token_delay_s=0.3, chunks=8)) as emu:
        client, _ = make_client(emu, mode, heartbeat_s=0.2)
        async with client:
            assert await client.generate("composer-2", "long") == expected_reply("long")
    assert emu.runs[-1].client_heartbeats >= 3
    if mode == "never":
        # Every append is a new call and carries the current (refreshed) token; on h2 the token
        # is checked once, when the Run stream opens, and outliving it mid-turn is fine.
        assert emu.tokens_issued >= 2
        append_tokens = {r.headers["authorization"] for r in emu.requests if r.path.endswith("/BidiAppend")}
        assert len(append_tokens) >= 2 and all(r.status == 200 for r in emu.requests)


async def test_auto_mode_follows_server_config() -> None:
    async with Emulator(Behaviour(advertise_http2=True)) as emu:
        client, transport = make_client(emu, "auto")
        async with client:
            await client.generate("composer-2", "h2?")
        assert transport.last_channel == "run" and emu.runs[-1].transport == "run"
    async with Emulator() as emu:
        client, transport = make_client(emu, "auto")
        async with client:
            await client.generate("composer-2", "sse?")
        assert transport.last_channel == "runsse"  # http:// backend without the server's say-so


async def test_no_secret_in_logs_or_errors(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make_client(emu, "never")
    errors: list[str] = []
    async with client:
        await client.generate("composer-2", "hi")
        for fault in (Fault.USAGE_LIMIT, Fault.RATE_LIMIT, Fault.UNAUTHENTICATED):
            emu.inject(fault, times=2)
            try:
                await client.generate("composer-2", "hi")
            except Exception as exc:
                errors.append(f"{exc!s} {exc!r} {getattr(exc, 'details', '')}")
    tokens = {h["authorization"].removeprefix("Bearer ") for h in run_headers(emu)}
    assert len(errors) == 3 and tokens
    for secret in (emu.api_key, *tokens):
        assert secret not in caplog.text
        assert all(secret not in e for e in errors)
