"""Raw SSE transcripts of ``POST /v1/messages`` compared event by event with the sequence
docs/anthropic.md §4 documents, every payload also checked against the anthropic SDK's own event
types; keep-alive pings, mid-stream errors, and failures before any output as HTTP statuses."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from cursorpipe import MockTransport
from cursorpipe.errors import AuthenticationError, NetworkError
from cursorpipe.testing.emulator import DEFAULT_THINKING, expected_reply
from cursorpipe.types import TextDelta, ThinkingDelta, TurnEnd, Usage, UsageEvent
from pydantic import TypeAdapter

EVENTS = TypeAdapter(RawMessageStreamEvent)
BODY: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def transcript(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE body written exactly as Anthropic writes it: ``event:`` then
    ``data:`` (one line of JSON) then a blank line, nothing else."""
    assert raw.endswith("\n\n")
    out = []
    for block in raw[:-2].split("\n\n"):
        match = re.fullmatch(r"event: ([a-z_]+)\ndata: (\{.*\})", block)
        assert match, block
        name, data = match.group(1), json.loads(match.group(2))
        assert data["type"] == name
        if name not in ("ping", "error"):
            EVENTS.validate_python(data)  # the SDK's own types accept every payload
        out.append((name, data))
    return out


def usage(inp: int, out: int, read: int = 0, created: int = 0) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": created,
    }


async def test_transcript_event_by_event(served) -> None:
    mock = MockTransport()
    reported = Usage(input_tokens=50, output_tokens=9, cache_read_tokens=30, cache_write_tokens=5)
    mock.queue(
        [
            ThinkingDelta("Hmm, "),
            ThinkingDelta("ok."),
            TextDelta("Hello"),
            TextDelta(" there."),
            UsageEvent(reported),
            TurnEnd("stop", reported),
        ]
    )
    s = await served(mock)
    r = await s.http.post("/v1/messages", json=BODY)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"] == r.headers["x-request-id"]
    got = transcript(r.text)
    msg_id = got[0][1]["message"]["id"]
    assert re.fullmatch(r"msg_[0-9a-f]{24}", msg_id)
    prompt = got[0][1]["message"]["usage"]["input_tokens"]
    assert prompt >= 1
    expected = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": "auto",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage(prompt, 0),
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Hmm, "},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "ok."},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "cursorpipe-unsigned"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " there."}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": usage(15, 9, read=30, created=5),
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert len(got) == len(expected)
    for i, (have, want) in enumerate(zip(got, expected, strict=True)):
        assert have == want, f"event {i}"


_GRAMMAR = re.compile(
    r"message_start ping( ping)*"
    r"( content_block_start( content_block_delta)+ content_block_stop)+"
    r" message_delta message_stop"
)


@pytest.mark.slow
async def test_emulator_transcript_follows_the_documented_grammar(live) -> None:
    import httpx

    server = await live()
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        plain = await http.post(
            "/v1/messages", json={**BODY, "messages": [{"role": "user", "content": "raw"}]}
        )
        called = await http.post(
            "/v1/messages",
            json={
                **BODY,
                "tools": [tool],
                "messages": [{"role": "user", "content": "weather? use get_weather"}],
            },
        )
    for response in (plain, called):
        events = transcript(response.text)
        assert _GRAMMAR.fullmatch(" ".join(name for name, _ in events)), [n for n, _ in events]
        starts = [d for n, d in events if n == "content_block_start"]
        assert [d["index"] for d in starts] == list(range(len(starts)))  # indices 0, 1, 2...
    events = transcript(plain.text)
    thinking = "".join(d["delta"].get("thinking", "") for n, d in events if n == "content_block_delta")
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert (thinking, text) == (DEFAULT_THINKING, expected_reply("raw"))
    events = transcript(called.text)
    blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert blocks[-1] == "tool_use" and events[-2][1]["delta"]["stop_reason"] == "tool_use"
    arguments = "".join(d["delta"].get("partial_json", "") for n, d in events if n == "content_block_delta")
    assert isinstance(json.loads(arguments), dict)


async def test_pings_keep_a_silent_stream_alive(served) -> None:
    s = await served(MockTransport(first_delay_s=0.4), keepalive_s=0.1)
    r = await s.http.post("/v1/messages", json=BODY)
    names = [n for n, _ in transcript(r.text)]
    first_block = names.index("content_block_start")
    assert names[0] == "message_start" and names[1:first_block].count("ping") >= 2
    assert names[-1] == "message_stop"


async def test_mid_stream_error_event_ends_the_stream(served) -> None:
    mock = MockTransport()
    mock.queue([TextDelta("partial "), NetworkError("connection reset by Cursor")])
    s = await served(mock, max_retries=0)
    r = await s.http.post("/v1/messages", json=BODY)
    assert r.status_code == 200
    events = transcript(r.text)
    assert [n for n, _ in events][-1] == "error" and "message_stop" not in [n for n, _ in events]
    error = events[-1][1]
    assert error["error"]["type"] == "api_error" and "connection reset" in error["error"]["message"]
    assert set(error) == {"type", "error"} and r.headers["request-id"] == r.headers["x-request-id"]


async def test_failure_before_output_is_an_http_status(served) -> None:
    mock = MockTransport()
    mock.queue(AuthenticationError("no credentials"))
    s = await served(mock)
    r = await s.http.post("/v1/messages", json=BODY)
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["type"] == "authentication_error"
    assert "CURSOR_API_KEY" in r.json()["error"]["message"]  # the server's login hint, as on OpenAI routes
