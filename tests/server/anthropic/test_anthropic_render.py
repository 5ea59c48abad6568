"""The sans-IO rendering of cursorpipe events in Anthropic's wire format (issue 14): the exact SSE
event sequence, the non-streaming message, usage, stop reasons, errors and the models shape."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from cursorpipe import TurnAccumulator
from cursorpipe.errors import AuthenticationError, RateLimitError
from cursorpipe.server._anthropic._errors import anthropic_error_body, anthropic_error_type
from cursorpipe.server._anthropic._models import model_json, models_page
from cursorpipe.server._anthropic._render import (
    THINKING_SIGNATURE,
    MessagesRenderer,
    message_id,
    message_json,
    stop_reason,
    usage_json,
)
from cursorpipe.server._anthropic._request import parse_messages
from cursorpipe.server._anthropic._stops import StopSequences
from cursorpipe.server._errors import APIError, describe, error_response
from cursorpipe.types import (
    Event,
    ModelInfo,
    ParsedOutput,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    Usage,
    UsageEvent,
)


def parse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) per SSE event; every event must have both lines, in that order."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = name_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == name  # Anthropic repeats the event name as the data's type
        out.append((name, data))
    return out


def renderer(**body: Any) -> MessagesRenderer:
    """A renderer for a Messages request whose prompt is estimated at 7 tokens."""
    raw = {"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "x" * 28}], **body}
    return MessagesRenderer(parse_messages(raw, strict=False))


def render(
    events: list[Event], usage: Usage | None = None, **body: Any
) -> tuple[MessagesRenderer, list[tuple[str, dict[str, Any]]]]:
    """Drive a renderer as the shared turn loop does: open, each event (fed to the run first),
    run_end, close with the loop's usage."""
    r = renderer(**body)
    run = TurnAccumulator()
    raw = r.open("auto")
    for e in events:
        run.feed(e)
        raw += r.event(0, e, run)
    raw += r.run_end(0, run) + r.close([run], usage or run.usage_or_estimate(None))
    return r, parse(raw)


CALL = ToolCall("toolu_1", "get_weather", '{"city": "Oslo"}')
TOOLS = [{"name": n, "input_schema": {"type": "object"}} for n in ("get_weather", "get_time", "nope")]
USAGE = Usage(input_tokens=100, output_tokens=20, cache_read_tokens=60, cache_write_tokens=10)


def test_full_sequence_thinking_text_tool_use() -> None:
    events: list[Event] = [
        TransportInfo("connect", model="claude-4.5-sonnet"),
        ThinkingDelta("Let me "),
        ThinkingDelta("think."),
        TextDelta("Checking"),
        TextDelta(" now."),
        ToolCallDelta(0, id="toolu_1", name="get_weather"),
        ToolCallDelta(0, arguments_delta='{"city": '),
        ToolCallDelta(0, arguments_delta='"Oslo"}'),
        ToolCallEvent(CALL, index=0),
        UsageEvent(USAGE),
        TurnEnd("tool_calls", USAGE),
    ]
    r, got = render(events)
    assert [name for name, _ in got] == [
        "message_start",
        "ping",
        "content_block_start",  # thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",  # signature_delta
        "content_block_stop",
        "content_block_start",  # text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # tool_use
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert start == {
        "id": r.msg_id,
        "type": "message",
        "role": "assistant",
        "model": "auto",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 7,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }
    assert got[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert got[3][1]["delta"] == {"type": "thinking_delta", "thinking": "Let me "}
    assert got[5][1] == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": THINKING_SIGNATURE},
    }
    assert got[6][1] == {"type": "content_block_stop", "index": 0}
    assert got[7][1]["content_block"] == {"type": "text", "text": ""} and got[7][1]["index"] == 1
    assert [d["delta"]["text"] for _, d in got[8:10]] == ["Checking", " now."]
    assert got[11][1] == {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    }
    pieces = [d["delta"] for _, d in got[12:14]]
    assert pieces == [
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    ]
    assert got[15][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 30,
            "output_tokens": 20,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 10,
        },
    }
    assert r.msg_id.startswith("msg_") and r.keepalive == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_the_model_in_message_start_is_the_one_the_loop_names() -> None:
    assert parse(renderer().open("gpt-5"))[0][1]["message"]["model"] == "gpt-5"


def test_arguments_that_do_not_add_up_are_sent_whole_and_notices_are_not_output() -> None:
    events: list[Event] = [
        TextDelta("quota warning", notice=True),
        ToolCallDelta(0, id="toolu_1", name="get_weather"),
        ToolCallDelta(0, arguments_delta="{'city'"),  # a transport that normalised the JSON later
        ToolCallEvent(CALL, index=0),
        TurnEnd("tool_calls"),
    ]
    _, got = render(events)
    deltas = [d["delta"] for n, d in got if n == "content_block_delta"]
    assert deltas == [{"type": "input_json_delta", "partial_json": CALL.arguments}]
    assert not any(d.get("delta", {}).get("text") == "quota warning" for _, d in got)


def test_invalid_handled_and_disallowed_parallel_calls_never_reach_the_client() -> None:
    second = ToolCall("toolu_2", "get_time", "{}")
    events: list[Event] = [
        ToolCallEvent(ToolCall("bad", "nope", "{"), index=0, error="unknown tool"),
        ToolCallEvent(ToolCall("h", "get_weather", "{}"), index=1, handled=True),
        ToolCallEvent(CALL, index=2),
        ToolCallEvent(second, index=3),
        TurnEnd("tool_calls"),
    ]
    _, got = render(events, tool_choice={"type": "auto", "disable_parallel_tool_use": True}, tools=TOOLS)
    starts = [d["content_block"]["id"] for n, d in got if n == "content_block_start"]
    assert starts == ["toolu_1"]
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    _, got = render([*events[:2], TurnEnd("tool_calls")], tools=TOOLS)
    assert [n for n, _ in got if n.startswith("content_block")] == []
    assert got[-2][1]["delta"]["stop_reason"] == "end_turn"  # no call left to run


async def test_stop_sequence_stage_ends_the_stream_and_is_reported() -> None:
    r = renderer(stop_sequences=["END"])
    assert r.spec.stop == () and r.spec.stop_sequences == ("END",)  # the route applies them itself
    source: list[Event] = [TextDelta("abcdefgh E"), TextDelta("ND and more"), TurnEnd("stop")]
    out, closed = await _drain_stage(r, source)
    run = TurnAccumulator()
    raw = r.open("auto")
    for e in out:
        run.feed(e)
        raw += r.event(0, e, run)
    raw += r.close([run], run.usage_or_estimate(None))
    got = parse(raw)
    assert "".join(d["delta"].get("text", "") for n, d in got if n == "content_block_delta") == "abcdefgh "
    delta = got[-2][1]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert delta["usage"]["input_tokens"] == 7 and delta["usage"]["output_tokens"] == 2
    assert closed == [True]  # the upstream run was closed (cancelled) at the match
    body, headers = r.body([run], run.usage_or_estimate(None), "auto")
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END") and headers == {}


def test_body_counts_invalid_and_dropped_calls_in_headers() -> None:
    r = renderer(tools=TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    run = TurnAccumulator()
    for e in (
        ToolCallEvent(ToolCall("bad", "nope", "{"), index=0, error="arguments are not JSON"),
        ToolCallEvent(CALL, index=1),
        ToolCallEvent(ToolCall("toolu_2", "get_time", "{}"), index=2),
        TurnEnd("tool_calls", USAGE),
    ):
        run.feed(e)
    body, headers = r.body([run], USAGE, "auto")
    assert [b["id"] for b in body["content"] if b["type"] == "tool_use"] == ["toolu_1"]
    assert headers == {"x-cursorpipe-invalid-tool-calls": "1", "x-cursorpipe-dropped-tool-calls": "1"}


def test_mid_stream_error_event() -> None:
    (event,) = parse(renderer().fail(describe(RateLimitError("slow down", retry_after=3))))
    assert event == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    )


@pytest.mark.parametrize(
    ("reason", "tool_use", "stop", "expected"),
    [
        ("stop", False, None, "end_turn"),
        ("length", False, None, "max_tokens"),
        ("length", True, None, "max_tokens"),
        ("tool_calls", True, None, "tool_use"),
        ("stop", True, None, "tool_use"),
        ("tool_calls", False, None, "end_turn"),
        ("stop", False, "END", "stop_sequence"),
        ("content_filter", False, None, "refusal"),
        ("cancelled", False, None, "end_turn"),
    ],
)
def test_stop_reasons(reason: str, tool_use: bool, stop: str | None, expected: str) -> None:
    assert stop_reason(reason, tool_use=tool_use, stop_sequence=stop) == expected


def test_usage_counts_cursors_cached_tokens_once() -> None:
    got = usage_json(USAGE)
    assert got == {
        "input_tokens": 30,
        "output_tokens": 20,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 10,
    }
    prompt = got["input_tokens"] + got["cache_read_input_tokens"] + got["cache_creation_input_tokens"]
    assert prompt == USAGE.input_tokens
    assert usage_json(Usage(input_tokens=5, cache_read_tokens=9))["input_tokens"] == 0  # never negative


def test_message_json() -> None:
    acc = TurnAccumulator()
    for event in (
        ThinkingDelta("hmm"),
        TextDelta("Sunny "),
        TextDelta("soon."),
        ToolCallEvent(CALL, index=0),
        ToolCallEvent(ToolCall("toolu_2", "get_time", "{}"), index=1),
        TurnEnd("tool_calls", USAGE),
    ):
        acc.feed(event)
    mid = message_id()
    assert mid.startswith("msg_") and len(mid) == 28 and mid != message_id()
    got = message_json(acc, msg_id=mid, model="m", usage=USAGE)
    assert got["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": THINKING_SIGNATURE},
        {"type": "text", "text": "Sunny soon."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ]
    assert (got["id"], got["type"], got["role"], got["model"]) == (mid, "message", "assistant", "m")
    assert got["stop_reason"] == "tool_use" and got["stop_sequence"] is None
    assert got["usage"] == usage_json(USAGE)
    single = message_json(acc, msg_id=mid, model="m", usage=USAGE, parallel=False)
    assert [b["type"] for b in single["content"]] == ["thinking", "text", "tool_use"]
    acc = TurnAccumulator()
    for event in (TextDelta('Here: {"a": 1}'), ParsedOutput({"a": 1}), TurnEnd("stop")):
        acc.feed(event)
    got = message_json(acc, msg_id=mid, model="m", usage=Usage(), stop_sequence="END")
    assert got["content"] == [{"type": "text", "text": '{"a":1}'}]
    assert (got["stop_reason"], got["stop_sequence"]) == ("stop_sequence", "END")


async def _source(events: list[Event], closed: list[bool]) -> AsyncGenerator[Event, None]:
    try:
        for event in events:
            yield event
    finally:
        closed.append(True)


async def _drain(stage: StopSequences, events: list[Event]) -> tuple[list[Event], list[bool]]:
    closed: list[bool] = []
    return [e async for e in stage.apply(_source(events, closed))], closed


async def _drain_stage(r: MessagesRenderer, events: list[Event]) -> tuple[list[Event], list[bool]]:
    closed: list[bool] = []
    return [e async for e in r.stage(_source(events, closed))], closed


async def test_stop_sequences_stage_cuts_across_deltas_and_names_the_match() -> None:
    stage = StopSequences(["STOP", "ST"], prompt_tokens=3)
    events: list[Event] = [
        ThinkingDelta("t"),
        TextDelta("Hello S"),
        TextDelta("TOP and more"),
        TextDelta("x"),
    ]
    out, closed = await _drain(stage, [*events, TurnEnd("stop")])
    assert [e for e in out if isinstance(e, TextDelta)] == [TextDelta("Hello ")]
    assert stage.matched == "ST"  # the shorter one was complete first
    end = out[-1]
    assert isinstance(end, TurnEnd) and end.stop_reason == "stop" and end.usage is not None
    assert end.usage.estimated and end.usage.input_tokens == 3
    assert closed == [True]


async def test_stop_sequences_stage_without_a_match_flushes_and_keeps_the_turn_end() -> None:
    stage = StopSequences(["STOP"], prompt_tokens=3)
    out, _ = await _drain(stage, [TextDelta("all S"), TextDelta("T"), TurnEnd("stop", USAGE)])
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "all ST"
    assert out[-1] == TurnEnd("stop", USAGE) and stage.matched is None
    closed: list[bool] = []
    source = _source([TextDelta("STOP"), TurnEnd("stop")], closed)
    assert renderer().stage(source) is source  # no stop sequences: no stage at all


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types_by_status(status: int, kind: str) -> None:
    assert anthropic_error_type(status) == kind


def anthropic_response(exc: BaseException) -> Any:
    return error_response(exc, request_id="req_1", shape=anthropic_error_body)


def test_error_response_keeps_the_shared_status_and_retry_headers() -> None:
    response = anthropic_response(RateLimitError("slow down", retry_after=2.5))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3" and response.headers["x-should-retry"] == "true"
    assert json.loads(bytes(response.body)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    body = anthropic_error_body(describe(AuthenticationError("no credentials")))
    assert body["error"]["type"] == "authentication_error" and "CURSOR_API_KEY" in body["error"]["message"]
    unexpected = anthropic_response(RuntimeError("boom"))
    assert unexpected.status_code == 500
    assert json.loads(bytes(unexpected.body))["error"]["type"] == "api_error"
    assert "boom" not in bytes(unexpected.body).decode()  # internals stay in the log
    assert anthropic_response(APIError(400, "bad", param="x")).status_code == 400


def test_models_shape() -> None:
    info = ModelInfo(
        id="claude-4.5-sonnet",
        display_name="Claude 4.5 Sonnet",
        context_window=200_000,
        max_output_tokens=64_000,
    )
    assert model_json(info, 0.0) == {
        "type": "model",
        "id": "claude-4.5-sonnet",
        "display_name": "Claude 4.5 Sonnet",
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
        "max_input_tokens": 200_000,
        "max_tokens": 64_000,
    }
    page = models_page([info, ModelInfo(id="auto")], 0.0)
    assert page["has_more"] is False and (page["first_id"], page["last_id"]) == ("claude-4.5-sonnet", "auto")
    assert page["data"][1]["display_name"] == "auto" and "max_tokens" not in page["data"][1]
    assert models_page([], 0.0) == {"data": [], "has_more": False, "first_id": None, "last_id": None}
