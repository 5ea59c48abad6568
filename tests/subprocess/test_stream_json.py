"""The sans-IO stream-json parser on golden lines, and fuzzed with hypothesis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cursorpipe._codecs.stream_json import (
    Finished,
    InbandError,
    ParsedEvent,
    SessionStarted,
    StrayLine,
    StreamJsonParser,
    TextChunk,
    ThinkingChunk,
    ToolActivity,
    parse_usage,
)
from cursorpipe.errors import ProtocolError
from cursorpipe.testing.fake_agent import catalog as cat
from cursorpipe.types import Usage
from hypothesis import given, settings
from hypothesis import strategies as st

SID = "3f1c7e0a-52a4-4a36-9d0c-0d8e5d7c1a11"


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def init() -> bytes:
    return line(
        {
            "type": "system",
            "subtype": "init",
            "apiKeySource": "env",
            "cwd": "/w",
            "session_id": SID,
            "model": "Auto",
            "permissionMode": "default",
        }
    )


def delta(text: str, *, ts: int = 1, dup: bool = False) -> bytes:
    obj: dict[str, Any] = {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "session_id": SID,
        "timestamp_ms": ts,
    }
    if dup:
        obj["model_call_id"] = "mc_1"
    return line(obj)


def message(text: str) -> bytes:
    return line(
        {
            "type": "assistant",
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
            "session_id": SID,
        }
    )


def result(text: str, **extra: Any) -> bytes:
    obj = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 5,
        "duration_api_ms": 5,
        "result": text,
        "session_id": SID,
        "request_id": "r1",
    }
    obj.update(extra)
    return line(obj)


def texts(events: list[ParsedEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk))


def parse(data: bytes) -> list[ParsedEvent]:
    parser = StreamJsonParser()
    return parser.feed(data) + parser.close()


def test_partial_output_with_duplicates_gives_each_character_once() -> None:
    data = (
        init()
        + line(
            {
                "type": "user",
                "message": {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                "session_id": SID,
            }
        )
        + line({"type": "thinking", "subtype": "delta", "text": "hmm ", "session_id": SID, "timestamp_ms": 1})
        + line({"type": "thinking", "subtype": "completed", "session_id": SID, "timestamp_ms": 2})
        + delta("Hello")
        + delta(", ")
        + delta(", ", dup=True)
        + delta("world")
        + message("Hello, world")
        + result(
            "Hello, world",
            usage={"inputTokens": 10, "outputTokens": 3, "cacheReadTokens": 7, "cacheWriteTokens": 1},
        )
    )
    events = parse(data)
    assert isinstance(events[0], SessionStarted) and events[0].session_id == SID and events[0].model == "Auto"
    assert [e.text for e in events if isinstance(e, ThinkingChunk)] == ["hmm "]
    assert texts(events) == "Hello, world"
    fin = events[-1]
    assert isinstance(fin, Finished)
    assert fin.usage == Usage(input_tokens=10, output_tokens=3, cache_read_tokens=7, cache_write_tokens=1)
    assert fin.session_id == SID and fin.request_id == "r1" and fin.duration_ms == 5 and not fin.is_error


def test_genuine_repeated_delta_is_kept() -> None:
    # Two identical deltas without model_call_id are real text ("very very").
    events = parse(delta("very ") + delta("very ") + delta("good") + message("very very good") + result("x"))
    assert texts(events) == "very very good"


def test_without_partial_output_every_message_counts() -> None:
    events = parse(init() + message("Part one. ") + message("Part two.") + result("Part one. Part two."))
    assert texts(events) == "Part one. Part two."


def test_cumulative_message_longer_than_deltas_emits_the_rest() -> None:
    events = parse(delta("Hel") + message("Hello") + result("Hello"))
    assert texts(events) == "Hello"


def test_segments_around_tool_calls_and_whole_answer_repeat() -> None:
    tool = {
        "type": "tool_call",
        "subtype": "started",
        "call_id": "c1",
        "tool_call": {"readToolCall": {"args": {"path": "a"}}},
        "session_id": SID,
    }
    data = (
        delta("A ")
        + delta("B ")
        + message("A B ")
        + line(tool)
        + delta("C ")
        + delta("D")
        + message("C D")
        + message("A B C D")
        + result("A B C D")
    )
    events = parse(data)
    assert texts(events) == "A B C D"
    assert ToolActivity("c1", "readToolCall", "started") in events


def test_result_text_is_the_fallback_when_nothing_streamed() -> None:
    events = parse(init() + result("only in result"))
    assert texts(events) == "only in result"


def test_usage_shapes() -> None:
    assert parse_usage({"usage": {"inputTokens": 1, "outputTokens": 2}}) == Usage(
        input_tokens=1, output_tokens=2
    )
    assert parse_usage({"inputTokens": 4, "outputTokens": 5}) == Usage(input_tokens=4, output_tokens=5)
    assert parse_usage({"usage": {"input_tokens": 6, "output_tokens": 7, "cache_read_tokens": 8}}) == Usage(
        input_tokens=6, output_tokens=7, cache_read_tokens=8
    )
    assert parse_usage({"result": "x"}) is None
    assert parse_usage({"usage": {"foo": 1}}) is None
    assert parse_usage({"usage": {"inputTokens": "12", "outputTokens": -3}}) == Usage(input_tokens=12)


@pytest.mark.parametrize("key", ["resource_exhausted", "writable_closed", "usage_limit", "model_not_found"])
def test_inband_errors_are_held_back_and_reported(key: str) -> None:
    err = cat.INBAND_ERRORS[key].replace("{model}", "m")
    reply = "Partial answer"
    data = b"".join(delta(piece) for piece in cat.reply_chunks(reply + "\n\n" + err))
    events = parse(data + message(reply + "\n\n" + err) + result(reply + "\n\n" + err))
    assert texts(events) == reply + "\n\n"
    inband = [e for e in events if isinstance(e, InbandError)]
    assert [e.text for e in inband] == [err]
    assert isinstance(events[-1], Finished)


def test_inband_error_alone_and_multiline_usage_limit() -> None:
    text = cat.usage_limit_text()
    events = parse(message(text) + result(text))
    assert texts(events) == ""
    assert [e.text for e in events if isinstance(e, InbandError)] == [text]


def test_ordinary_lines_starting_with_error_are_text() -> None:
    answer = "Error: handling in Python\nUse try/except.\nError: X: is a label\n" + "more text\n" * 20
    events = parse(delta(answer) + message(answer) + result(answer))
    assert texts(events) == answer
    assert not [e for e in events if isinstance(e, InbandError)]
    held = parse(delta("E") + delta("rr") + delta("or-free code") + result("Error-free code"))
    assert texts(held) == "Error-free code"


def test_stray_lines_bad_json_and_after_result() -> None:
    parser = StreamJsonParser()
    events = parser.feed(b"\xe2\x9a\xa0 Warning: The provided API key is inv\nnot json {\n[1,2]\n\n")
    assert [type(e) for e in events] == [StrayLine, StrayLine, StrayLine]
    assert parser.stray[0].startswith("⚠ Warning")
    events = parser.feed(result("done") + message("ignored after result"))
    assert isinstance(events[-1], Finished)
    assert parser.feed(message("more")) == [] and parser.close() == []


def test_any_split_gives_the_same_events() -> None:
    data = init() + delta("héllo ") + delta("wörld") + message("héllo wörld") + result("héllo wörld")
    whole = parse(data)
    for size in (1, 2, 3, 7, 64):
        parser = StreamJsonParser()
        events: list[ParsedEvent] = []
        for i in range(0, len(data), size):
            events += parser.feed(data[i : i + size])
        events += parser.close()
        assert events == whole


def test_unterminated_last_line_is_parsed_at_close() -> None:
    parser = StreamJsonParser()
    assert not [e for e in parser.feed(result("end").rstrip(b"\n")) if isinstance(e, Finished)]
    assert isinstance(parser.close()[-1], Finished)


def test_over_long_line_is_a_protocol_error() -> None:
    parser = StreamJsonParser(max_line_bytes=100)
    with pytest.raises(ProtocolError):
        parser.feed(b"x" * 101)
    with pytest.raises(ProtocolError):
        StreamJsonParser(max_line_bytes=10).feed_line(b"y" * 11)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_fuzz_bytes_never_raise_anything_but_protocol_error(data: bytes, cuts: list[int]) -> None:
    parser = StreamJsonParser(max_line_bytes=512)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            parser.feed(data[pos : pos + cut])
            pos += cut
        parser.close()
    except ProtocolError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["text", "type", "content"]), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.sampled_from(
    [
        "message",
        "text",
        "usage",
        "result",
        "timestamp_ms",
        "model_call_id",
        "session_id",
        "tool_call",
        "subtype",
        "is_error",
        "duration_ms",
        "inputTokens",
    ]
)
_kinds = st.sampled_from(["assistant", "thinking", "result", "system", "tool_call", "user", "x"])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_kinds, st.dictionaries(_keys, _json_values, max_size=5)), max_size=8))
def test_fuzz_odd_event_shapes_never_raise(objs: list[tuple[str, dict[str, Any]]]) -> None:
    parser = StreamJsonParser()
    for kind, fields in objs:
        parser.feed(json.dumps({"type": kind, **fields}).encode() + b"\n")
    parser.close()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sets(st.integers(min_value=0, max_value=60), max_size=10))
def test_dedupe_property_text_arrives_exactly_once(reply: str, dup_at: set[int]) -> None:
    chunks = cat.reply_chunks(reply) if reply else []
    data = b""
    for i, chunk in enumerate(chunks):
        data += delta(chunk, ts=i)
        if i in dup_at:
            data += delta(chunk, ts=i, dup=True)
    data += message(reply) + result(reply)
    events = parse(data)
    inband = "".join(e.text for e in events if isinstance(e, InbandError))
    got = texts(events)
    if inband:
        assert got + inband == reply or reply.startswith(got)
    else:
        assert got == reply
