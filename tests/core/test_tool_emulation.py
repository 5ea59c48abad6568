"""Emulated tool calling (transports without a client tool channel), driven through the client."""

from __future__ import annotations

import json

import pytest
from cursorpipe import CursorClient, MockTransport, TextDelta, ToolCallDelta, ToolCallEvent, ToolSpec
from cursorpipe._tool_emulation import CLOSE_TAG, OPEN_TAG, EmulatedToolParser, tool_instructions
from cursorpipe.types import ChatMessage, ToolCall, normalize_messages

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def block(payload: object) -> str:
    return OPEN_TAG + json.dumps(payload) + CLOSE_TAG


async def test_tool_call_parsed_from_split_stream() -> None:
    mock = MockTransport()
    text = "Let me check. " + block({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    # Split in awkward places, including inside the opening tag.
    mock.queue([TextDelta(text[:16]), TextDelta(text[16:19]), TextDelta(text[19:])])
    async with CursorClient(transport=mock) as client:
        events = [e async for e in client.events("auto", prompt="weather in Oslo?", tools=[WEATHER])]
        result = await client.complete("auto", prompt="again", tools=[WEATHER], tool_choice="auto")
    texts = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert texts == "Let me check. "
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert len(calls) == 1 and calls[0].emulated and calls[0].error is None
    assert calls[0].call.name == "get_weather"
    assert json.loads(calls[0].call.arguments) == {"city": "Oslo"}
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].id == calls[0].call.id and deltas[0].index == 0
    assert events[-1].stop_reason == "tool_calls"  # type: ignore[union-attr]
    # The tools were described to the model in a system message.
    sent = mock.requests[0].messages
    assert sent[0].role == "system" and "get_weather" in sent[0].text
    assert result.text.startswith("echo:")  # the second, unscripted turn has no call
    assert result.tool_calls == ()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"tool_calls": [{"name": "launch_rockets", "arguments": {}}]}), "unknown tool"),
        (json.dumps({"tool_calls": [{"name": "get_weather", "arguments": "[1,"}]}), "not valid JSON"),
        (json.dumps({"tool_calls": [{"name": "get_weather", "arguments": [1]}]}), "not a JSON object"),
        (json.dumps({"tool_calls": []}), "no calls"),
    ],
)
async def test_malformed_calls_become_invalid_tool_calls(payload: str, error: str) -> None:
    mock = MockTransport()
    mock.queue([TextDelta(OPEN_TAG + payload + CLOSE_TAG)])
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="x", tools=[WEATHER])
    assert result.tool_calls == ()
    assert len(result.invalid_tool_calls) == 1
    assert error in (result.invalid_tool_calls[0].error or "")
    assert result.stop_reason == "stop"


async def test_tool_results_in_history_are_rendered_as_text() -> None:
    mock = MockTransport()
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C, snow"},
    ]
    async with CursorClient(transport=mock) as client:
        await client.complete("auto", messages, tools=[WEATHER])
    sent = mock.requests[0].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert OPEN_TAG in sent[2].text and "Oslo" in sent[2].text
    assert "call_1" in sent[3].text and "-3 C, snow" in sent[3].text


async def test_tool_choice_none_offers_no_tools() -> None:
    mock = MockTransport()
    async with CursorClient(transport=mock) as client:
        await client.complete("auto", prompt="x", tools=[WEATHER], tool_choice="none")
    assert all("get_weather" not in m.text for m in mock.requests[0].messages)


def test_instructions_follow_tool_choice() -> None:
    spec = [ToolSpec("get_weather", "w", {"type": "object"})]
    assert "MUST call the tool 'get_weather'" in tool_instructions(
        spec, {"type": "function", "function": {"name": "get_weather"}}
    )
    assert "at least one tool" in tool_instructions(spec, "required")
    assert "only when it helps" in tool_instructions(spec, "auto")
    assert tool_instructions(spec, "none") == ""


def test_parser_passes_plain_text_and_tag_prefix_lookalikes() -> None:
    parser = EmulatedToolParser([ToolSpec("f")])
    out = parser.feed("a <tool") + parser.feed("box> b")
    rest, calls = parser.finish()
    assert out + rest == "a <toolbox> b"
    assert calls == []


def test_normalize_keeps_tool_messages() -> None:
    msgs = normalize_messages(
        [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"x": 1}}}]}]
    )
    assert msgs[0].tool_calls == (ToolCall("c", "f", '{"x": 1}'),)
    assert isinstance(msgs[0], ChatMessage)
