from __future__ import annotations

import asyncio
from contextlib import aclosing

import cursorpipe
import pytest
from cursorpipe import (
    AgentTimeoutError,
    AuthenticationError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    NetworkError,
    RateLimitError,
    SessionError,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    Usage,
    UsageEvent,
)
from cursorpipe.transports.mock import events_for


def make(transport: MockTransport | None = None, **cfg: object) -> tuple[CursorClient, MockTransport]:
    mock = transport or MockTransport()
    return CursorClient(CursorPipeConfig(**cfg), transport=mock), mock  # type: ignore[arg-type]


async def test_generate_sends_system_and_prompt() -> None:
    client, mock = make()
    async with client:
        text = await client.generate("auto", "hello there", system="be brief")
    assert text == "echo: hello there"
    req = mock.requests[0]
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.system == "be brief"
    assert req.mode == "ask"
    assert req.max_tokens == 2048
    assert mock.closed


async def test_chat_accepts_openai_messages_with_parts() -> None:
    client, mock = make()
    png = "data:image/png;base64,iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": png}}],
        },
    ]
    async with client:
        assert await client.chat("auto", messages) == "echo: look"
    req = mock.requests[0]
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "user"]
    assert req.messages[-1].images[0].data == b"\x89PNG\r\n\x1a\n"


async def test_chat_rejects_bad_messages() -> None:
    client, _ = make()
    async with client:
        with pytest.raises(cursorpipe.ConfigurationError, match="role"):
            await client.chat("auto", [{"role": "wizard", "content": "x"}])
        with pytest.raises(cursorpipe.ConfigurationError, match="user message"):
            await client.chat("auto", [{"role": "system", "content": "x"}])
        with pytest.raises(cursorpipe.ConfigurationError, match="base64"):
            await client.chat(
                "auto",
                [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}],
                    }
                ],
            )
    assert client.active_requests == 0


async def test_stream_yields_text_chunks_only() -> None:
    mock = MockTransport(thinking="pondering")
    client, _ = make(mock)
    async with client:
        chunks = [c async for c in client.stream("auto", "a b c")]
    assert "".join(chunks) == "echo: a b c"
    assert len(chunks) > 1


async def test_events_typed_sequence() -> None:
    mock = MockTransport(thinking="hmm")
    client, _ = make(mock)
    async with client:
        events = [e async for e in client.events("auto", prompt="x y")]
    assert isinstance(events[0], TransportInfo)
    assert events[0].transport == "mock"
    assert isinstance(events[1], ThinkingDelta)
    assert isinstance(events[-1], TurnEnd)
    assert isinstance(events[-2], UsageEvent)
    assert events[-1].stop_reason == "stop"


async def test_complete_returns_full_result() -> None:
    mock = MockTransport(thinking="deep thought")
    client, _ = make(mock)
    async with client:
        result = await client.complete("mock-fast", prompt="hi")
    assert result.text == "echo: hi"
    assert result.thinking == "deep thought"
    assert result.model == "mock-fast"
    assert result.transport == "mock"
    assert result.stop_reason == "stop"
    assert result.usage.output_tokens > 0
    assert result.duration_ms >= 0


async def test_default_model_from_config() -> None:
    client, mock = make(default_model="mock-fast")
    async with client:
        await client.generate(None, "x")
        await client.generate("", "x")
    assert [r.model for r in mock.requests] == ["mock-fast", "mock-fast"]


async def test_active_requests_counts_in_flight_and_returns_to_zero() -> None:
    mock = MockTransport(delay_s=0.02)
    client, _ = make(mock)
    seen: list[int] = []

    async def sample() -> None:
        for _ in range(5):
            seen.append(client.active_requests)
            await asyncio.sleep(0.01)

    async with client:
        await asyncio.gather(
            client.generate("auto", "one two three"),
            client.chat("auto", [{"role": "user", "content": "four five"}]),
            sample(),
        )
        assert max(seen) == 2
        assert client.active_requests == 0


async def test_active_requests_exact_when_transport_raises() -> None:
    client, mock = make(max_retries=0)
    mock.queue(AuthenticationError("nope"), [TextDelta("partial"), NetworkError("dropped", retryable=False)])
    async with client:
        with pytest.raises(AuthenticationError):
            await client.generate("auto", "x")
        assert client.active_requests == 0
        with pytest.raises(NetworkError):
            async for _ in client.stream("auto", "x"):
                pass
        assert client.active_requests == 0


async def test_active_requests_exact_when_cancelled() -> None:
    mock = MockTransport(delay_s=0.05)
    client, _ = make(mock)
    async with client:
        task = asyncio.create_task(client.generate("auto", "w " * 50))
        while client.active_requests == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.active_requests == 0
        assert mock.cancelled == 1


async def test_active_requests_exact_when_stream_abandoned() -> None:
    mock = MockTransport()
    client, _ = make(mock)
    async with client:
        async with aclosing(client.stream("auto", "a b c d e f")) as chunks:
            async for _ in chunks:
                assert client.active_requests == 1
                break
        assert client.active_requests == 0
        assert mock.cancelled == 1


async def test_active_requests_exact_in_sessions_under_cancellation() -> None:
    mock = MockTransport(delay_s=0.05)
    client, _ = make(mock)
    async with client:
        session = await client.create_session("auto")
        task = asyncio.create_task(session.prompt("x " * 30))
        while client.active_requests == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.active_requests == 0
        assert session.turn_count == 0
        async with aclosing(session.stream_prompt("a b c")) as s:
            async for _ in s:
                assert client.active_requests == 1
        assert client.active_requests == 0
        assert session.turn_count == 1


async def test_retries_retryable_errors_before_output() -> None:
    client, mock = make(max_retries=2)
    mock.queue(RateLimitError("slow down", retry_after=0.01), NetworkError("blip", retry_after=0.01))
    async with client:
        assert await client.generate("auto", "again") == "echo: again"
    assert len(mock.requests) == 3


async def test_no_retry_after_output_started() -> None:
    client, mock = make(max_retries=3)
    mock.queue([TextDelta("half"), NetworkError("dropped", retry_after=0.01)])
    async with client:
        with pytest.raises(NetworkError):
            await client.generate("auto", "x")
    assert len(mock.requests) == 1


async def test_retries_are_bounded() -> None:
    client, mock = make(max_retries=1)
    mock.queue(*(NetworkError("down", retry_after=0.01) for _ in range(3)))
    async with client:
        with pytest.raises(NetworkError):
            await client.generate("auto", "x")
    assert len(mock.requests) == 2


async def test_non_retryable_errors_fail_fast() -> None:
    client, mock = make(max_retries=3)
    mock.queue(AuthenticationError("bad key"))
    async with client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("auto", "x")
    assert info.value.transport == "mock"
    assert len(mock.requests) == 1


async def test_long_retry_after_is_not_slept() -> None:
    client, mock = make(max_retries=3)
    mock.queue(RateLimitError("quota", retry_after=3600))
    async with client:
        with pytest.raises(RateLimitError) as info:
            await client.generate("auto", "x")
    assert info.value.retry_after == 3600
    assert len(mock.requests) == 1


async def test_timeout_raises_typed_error_and_cancels_upstream() -> None:
    mock = MockTransport(first_delay_s=5)
    client, _ = make(mock)
    async with client:
        with pytest.raises(AgentTimeoutError, match="timeout_s"):
            await client.generate("auto", "x", timeout_s=0.1)
        assert client.active_requests == 0
    assert mock.cancelled == 1


async def test_max_tokens_cuts_output_with_length() -> None:
    client, mock = make()
    mock.queue("word " * 100)
    async with client:
        result = await client.complete("auto", prompt="x", max_tokens=5)
    assert result.stop_reason == "length"
    assert len(result.text) == 20
    assert result.usage.estimated
    assert mock.cancelled == 1


async def test_stop_sequences_are_enforced_across_chunks() -> None:
    client, mock = make()
    mock.queue([TextDelta("Hello wo"), TextDelta("rld END"), TextDelta("ING more")], "no stop here")
    async with client:
        result = await client.complete("auto", prompt="x", stop=["END"])
        assert result.text == "Hello world "
        assert result.stop_reason == "stop"
        result2 = await client.complete("auto", prompt="x", stop=["zzz"])
        assert result2.text == "no stop here"


async def test_real_usage_passes_through() -> None:
    client, mock = make()
    usage = Usage(input_tokens=11, output_tokens=7, cache_read_tokens=3, reasoning_tokens=2)
    mock.queue(events_for("hi", usage=usage))
    async with client:
        result = await client.complete("auto", prompt="x", stop=["never"])
    assert result.usage == usage
    assert result.usage.total_tokens == 18


async def test_sessions_keep_history_and_count_turns() -> None:
    client, mock = make()
    async with client:
        async with client.session("mock-fast") as session:
            assert session.model == "mock-fast"
            assert session.session_id.startswith("mock-session-")
            r1 = await session.prompt("first")
            r2 = await session.prompt("second")
            assert (r1.text, r2.text) == ("echo: first", "echo: second")
            assert r2.session_id == session.session_id
            assert session.turn_count == 2
            # Only the new message is sent each turn; the transport holds the history.
            assert [len(r.messages) for r in mock.requests] == [1, 1]
            assert len(mock.sessions[0].history) == 4
        assert session.discarded
        assert mock.sessions[0].closed
        with pytest.raises(SessionError):
            await session.prompt("third")


async def test_create_session_discard_is_idempotent() -> None:
    client, mock = make()
    async with client:
        session = await client.create_session()
        await session.discard()
        await session.discard()
    assert mock.sessions[0].closed


async def test_session_turns_are_serialised() -> None:
    mock = MockTransport(delay_s=0.01)
    client, _ = make(mock)
    async with client:
        session = await client.create_session()
        results = await asyncio.gather(session.prompt("one"), session.prompt("two"))
        assert {r.text for r in results} == {"echo: one", "echo: two"}
        assert session.turn_count == 2
        assert mock.running == 0


async def test_close_discards_sessions_and_is_idempotent() -> None:
    client, mock = make()
    session = await client.create_session()
    await client.close()
    await client.close()
    assert session.discarded and mock.closed
    with pytest.raises(SessionError, match="closed"):
        await client.generate("auto", "x")


async def test_warmup_and_list_models() -> None:
    client, mock = make()
    async with client:
        await client.warmup()
        await client.warmup(pool_size=2)
        models = await client.list_models()
    assert mock.started_with == [5, 2]
    assert any(m.matches("default") for m in models)


async def test_warmup_runs_the_cyclic_collector_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16: the full collection start-up left due happens in warmup, not the first request.
    collections: list[int] = []
    monkeypatch.setattr("cursorpipe.client.gc.collect", lambda: collections.append(1) or 0)
    client, mock = make()
    async with client:
        await client.warmup(pool_size=1)
        assert collections == [1]
        await client.generate("auto", "x")
    assert collections == [1] and mock.started_with == [1]


async def test_profiling_logs_ttfc(caplog: pytest.LogCaptureFixture) -> None:
    client, _ = make(enable_profiling=True)
    with caplog.at_level("INFO", logger="cursorpipe.profile"):
        async with client:
            await client.generate("auto", "a b")
    text = caplog.text
    assert "ttfc" in text and "total=" in text and "chunks=" in text


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "tool_calls": [1]},
        {"role": "assistant", "tool_calls": "call"},
        {"role": "assistant", "tool_calls": [{"function": "f"}]},
        {"role": "user", "content": [{"type": "image", "data": "@@not base64@@"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]},
        {"role": "user", "content": 42},
        {"role": "user", "content": [{"type": "audio"}]},
        "just a string",
    ],
)
async def test_odd_message_shapes_are_configuration_errors(message: object) -> None:
    client, mock = make()
    async with client:
        with pytest.raises(cursorpipe.ConfigurationError):
            await client.chat("auto", [message, {"role": "user", "content": "x"}])  # type: ignore[list-item]
    assert mock.requests == []
