"""The event pipeline's stages (``cursorpipe._pipeline``): validation on the event stream, stages
left out when they have nothing to do, the turn's one deadline timer, emulated tools as a wrapper
transport with per-round retries, and the session running on the pipeline without the client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from cursorpipe import (
    AgentTimeoutError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    NetworkError,
    StructuredOutputError,
)
from cursorpipe._pipeline import Pipeline, RetryPolicy
from cursorpipe._pipeline.emulated_tools import EmulatedToolsTransport
from cursorpipe._pipeline.retries import Deadline, DeadlineWatch
from cursorpipe._structured import ResponseFormat
from cursorpipe._tool_emulation import CLOSE_TAG, OPEN_TAG
from cursorpipe.transports.base import TransportCapabilities
from cursorpipe.types import (
    Event,
    ParsedOutput,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
)

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
CALL = f"{OPEN_TAG}{json.dumps({'tool_calls': [{'name': 'get_weather', 'arguments': {}}]})}{CLOSE_TAG}"


def answer(text: str, usage: Usage) -> list[Event]:
    return [TextDelta(text), UsageEvent(usage), TurnEnd("stop", usage)]


async def drain(stream: AsyncGenerator[Event, None]) -> list[Event]:
    return [e async for e in stream]


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- validation stage ---------------------------------------------------------------------------
async def test_validated_events_withhold_the_rejected_round_and_sum_usage() -> None:
    mock = MockTransport()
    mock.queue(
        answer('{"name": "Ada", "age": "old"}', Usage(input_tokens=10, output_tokens=4)),
        answer('{"name": "Ada", "age": 36}', Usage(input_tokens=20, output_tokens=5)),
    )
    async with CursorClient(transport=mock) as client:
        events = await drain(client.events("auto", prompt="who?", response_format=SCHEMA, validate=True))
    assert len(mock.requests) == 2
    assert "old" not in text_of(events) and text_of(events) == '{"name": "Ada", "age": 36}'
    assert sum(isinstance(e, TransportInfo) for e in events) == 1
    assert isinstance(events[-2], ParsedOutput) and events[-2].value == {"name": "Ada", "age": 36}
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.usage == Usage(input_tokens=30, output_tokens=9)
    usage_events = [e for e in events if isinstance(e, UsageEvent)]
    assert [u.usage for u in usage_events] == [Usage(input_tokens=30, output_tokens=9)]


async def test_without_validate_the_stream_is_the_raw_answer() -> None:
    mock = MockTransport()
    mock.queue(answer("not json", Usage(input_tokens=1, output_tokens=1)))
    async with CursorClient(transport=mock) as client:
        events = await drain(client.events("auto", prompt="who?", response_format=SCHEMA))
    assert text_of(events) == "not json" and not any(isinstance(e, ParsedOutput) for e in events)
    assert len(mock.requests) == 1


async def test_validated_run_request_raises_after_the_repair_round() -> None:
    mock = MockTransport()
    mock.queue("no json", '{"name": 1}')
    async with CursorClient(transport=mock) as client:
        request = client.build_request("auto", prompt="who?", response_format=SCHEMA)
        seen: list[Event] = []

        async def consume() -> None:
            async for event in client.run_request(request, validate=True):
                seen.append(event)

        with pytest.raises(StructuredOutputError):
            await consume()
        assert client.active_requests == 0
    assert seen == []  # both rounds were rejected: nothing reached the caller


async def test_forced_tool_choice_gets_one_repair_round_on_the_stream() -> None:
    mock = MockTransport()
    mock.queue(
        answer("It is sunny, I think.", Usage(input_tokens=7, output_tokens=3)),
        answer(CALL, Usage(input_tokens=9, output_tokens=6)),
    )
    async with CursorClient(transport=mock) as client:
        events = await drain(
            client.events("auto", prompt="weather?", tools=[WEATHER], tool_choice="required", validate=True)
        )
    assert "sunny" not in text_of(events)
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [c.call.name for c in calls] == ["get_weather"]
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.stop_reason == "tool_calls"
    assert end.usage == Usage(input_tokens=16, output_tokens=9)
    assert "Call at least one" in mock.requests[1].messages[-1].text


async def test_session_repair_round_sends_only_the_instruction() -> None:
    mock = MockTransport()
    mock.queue("plain text", CALL)
    async with CursorClient(transport=mock) as client, client.session("auto") as session:
        events = await drain(
            session.events("weather?", tools=[WEATHER], tool_choice="get_weather", validate=True)
        )
        assert session.turn_count == 1
    assert any(isinstance(e, ToolCallEvent) for e in events)
    repair = [m for m in mock.requests[1].messages if m.role != "system"]
    assert len(repair) == 1 and "'get_weather'" in repair[0].text


async def test_complete_and_validated_events_agree() -> None:
    mock = MockTransport()
    mock.queue('{"name": "Ada", "age": 36}')
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="who?", response_format=SCHEMA)
    assert result.parsed == {"name": "Ada", "age": 36}
    assert isinstance(mock.requests[0].response_format, ResponseFormat)
    assert mock.requests[0].response_format.name == "person"


def test_build_request_carries_the_parsed_response_format() -> None:
    client = CursorClient(CursorPipeConfig(), transport=MockTransport())
    request = client.build_request("auto", prompt="x", response_format={"type": "json_object"})
    assert request.response_format == ResponseFormat()
    assert client.build_request("auto", prompt="x").response_format is None


# -- stages are left out when idle (issue 16) -------------------------------------------------------
def _pipeline(transport: MockTransport) -> Pipeline:
    return Pipeline(transport, RetryPolicy(max_retries=0, default_timeout_s=5), tool_result_timeout_s=5)


async def test_idle_stages_are_not_in_the_chain() -> None:
    native = MockTransport(capabilities=TransportCapabilities(native_tools=True))
    request = TurnRequest(model="auto", messages=())
    plain = _pipeline(native).run(request)
    assert plain.ag_code.co_name == "run_with_retries"  # no limiter, no wrapper, no validation
    limited = _pipeline(native).run(TurnRequest(model="auto", messages=(), max_tokens=5))
    assert limited.ag_code.co_name == "limit_output"
    validated = _pipeline(native).run(request, validate=True)
    assert validated.ag_code.co_name == "run_with_retries"  # nothing to validate
    for stream in (plain, limited, validated):
        await stream.aclose()


async def test_emulation_wrapper_passes_a_request_without_tools_straight_through() -> None:
    inner = MockTransport()
    wrapper = EmulatedToolsTransport(inner)
    stream = wrapper.run(TurnRequest(model="auto", messages=()))
    direct = inner.run(TurnRequest(model="auto", messages=()))
    assert stream.ag_code is direct.ag_code
    await stream.aclose()
    await direct.aclose()
    assert wrapper.capabilities is inner.capabilities and wrapper.name == inner.name


async def test_each_round_of_the_emulated_loop_is_retried_on_its_own() -> None:
    mock = MockTransport()
    mock.queue(CALL, NetworkError("blip", retry_after=0.01), "done")

    async def handler(call: ToolCall) -> str:
        return "sunny"

    async with CursorClient(CursorPipeConfig(max_retries=2), transport=mock) as client:
        result = await client.complete("auto", prompt="weather?", tools=[WEATHER], tool_handler=handler)
    assert result.text == "done" and len(mock.requests) == 3
    assert mock.requests[1].run_id == mock.requests[2].run_id != mock.requests[0].run_id
    assert (mock.requests[1].attempt, mock.requests[2].attempt) == (0, 1)


# -- the turn's deadline --------------------------------------------------------------------------
async def _slow(delay: float) -> AsyncGenerator[Event, None]:
    await asyncio.sleep(delay)
    yield TextDelta("late")


async def _fast() -> AsyncGenerator[Event, None]:
    while True:
        yield TextDelta("x")


async def test_deadline_interrupts_a_waiting_pull_and_leaves_no_cancellation() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.05)
    with pytest.raises(TimeoutError):
        await deadline.next(_slow(5))
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task is not cancelled afterwards


async def test_deadline_passed_while_the_consumer_held_an_event_fails_the_next_pull() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 0.05)
    stream = _fast()
    assert isinstance(await deadline.next(stream), TextDelta)
    await asyncio.sleep(0.1)  # the consumer is slow: the timer fires while nobody pulls
    with pytest.raises(TimeoutError):
        await deadline.next(stream)
    await stream.aclose()


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop.time() + 5)
    task = asyncio.create_task(deadline.next(_slow(5)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.cancel()


async def test_turn_deadline_is_agent_timeout_on_the_pipeline() -> None:
    mock = MockTransport(delay_s=0.2)
    async with CursorClient(transport=mock) as client:
        with pytest.raises(AgentTimeoutError, match="timeout_s"):
            await client.complete("auto", prompt="one two three four", timeout_s=0.3)
        assert client.active_requests == 0
    assert mock.cancelled == 1


async def test_each_request_gets_a_random_version_4_run_id() -> None:
    mock = MockTransport()
    async with CursorClient(transport=mock) as client:
        for _ in range(200):
            await client.complete("auto", prompt="hi")
    ids = {request.run_id for request in mock.requests}
    assert len(ids) == 200
    for run_id in ids:
        assert run_id is not None
        parsed = uuid.UUID(run_id)
        assert str(parsed) == run_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_deadlines_sharing_a_watch_fire_each_at_its_own_time() -> None:
    loop = asyncio.get_running_loop()
    watch = DeadlineWatch()
    late = Deadline(loop.time() + 0.15, watch)
    early = Deadline(loop.time() + 0.05, watch)  # moves the shared timer earlier
    gone = Deadline(loop.time() + 0.02, watch)
    gone.cancel()  # a turn that ended: never fires
    start = loop.time()
    with pytest.raises(TimeoutError):
        await early.next(_slow(5))
    assert 0.04 <= loop.time() - start < 0.14 and not late.expired and not gone.expired
    with pytest.raises(TimeoutError):
        await late.next(_slow(5))  # the timer re-armed for the later deadline
    assert loop.time() - start >= 0.14 and not gone.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_watch_serves_one_loop_and_other_loops_get_their_own_timer() -> None:
    watch = DeadlineWatch()

    async def expire() -> bool:
        deadline = Deadline(asyncio.get_running_loop().time() + 0.01, watch)
        with pytest.raises(TimeoutError):
            await deadline.next(_slow(5))
        return deadline.expired

    assert await expire()
    other = await asyncio.to_thread(asyncio.run, expire())  # another loop in another thread
    assert other
