"""Validating Anthropic Messages bodies into cursorpipe types (issue 14): every field the route
honours, the mapping of tools, tool_choice and thinking, and a 400 naming the field for bad input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cursorpipe.server._anthropic._request import count_tokens, effort_for, parse_messages
from cursorpipe.server._errors import APIError
from cursorpipe.types import ImagePart, TextPart

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = base64.b64encode(b"\x89PNG fake").decode()


def body(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    out.update(extra)
    return out


def refused(raw: dict[str, Any], *, strict: bool = False) -> APIError:
    with pytest.raises(APIError) as info:
        parse_messages(raw, strict=strict)
    assert info.value.status == 400
    return info.value


def test_minimal_request() -> None:
    p = parse_messages(body(), strict=False)
    assert (p.model, p.max_tokens, p.stream) == ("auto", 64, False)
    assert [(m.role, m.text) for m in p.messages] == [("user", "hi")]
    assert p.ignored == [] and p.tools == () and p.tool_choice is None and p.parallel_tool_calls


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
def test_required_fields_are_named(missing: str) -> None:
    raw = body()
    del raw[missing]
    assert refused(raw).param == missing


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 0), ("max_tokens", "5"), ("temperature", 1.5), ("top_k", -1), ("stream", "yes")],
)
def test_wrong_values_are_named(field: str, value: Any) -> None:
    assert refused(body(**{field: value})).param == field


def test_system_as_string_and_as_blocks_with_cache_control() -> None:
    p = parse_messages(body(system="Be brief."), strict=False)
    assert [(m.role, m.text) for m in p.messages] == [("system", "Be brief."), ("user", "hi")]
    blocks = [
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."},
    ]
    p = parse_messages(body(system=blocks), strict=False)
    assert p.messages[0].role == "system" and p.messages[0].text == "One.\n\nTwo."
    assert p.ignored == []  # cache_control is accepted silently
    assert refused(body(system=[{"type": "image"}])).param == "system[0].type"
    assert refused(body(system=["text"])).param == "system[0]"


def test_images_base64_and_url() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    p = parse_messages(body(messages=[{"role": "user", "content": content}]), strict=False)
    (msg,) = p.messages
    assert msg.text == "what is this?"
    assert msg.images == (
        ImagePart(mime_type="image/png", data=b"\x89PNG fake"),
        ImagePart(url="https://example.com/cat.jpg"),
    )


@pytest.mark.parametrize(
    ("source", "param"),
    [
        (
            {"type": "base64", "media_type": "image/png", "data": "not base64!"},
            "messages[0].content[0].source.data",
        ),
        (
            {"type": "base64", "media_type": "text/plain", "data": PNG},
            "messages[0].content[0].source.media_type",
        ),
        ({"type": "url", "url": "file:///etc/passwd"}, "messages[0].content[0].source.url"),
        ({"type": "file", "file_id": "f_1"}, "messages[0].content[0].source.type"),
        ("nope", "messages[0].content[0].source"),
    ],
)
def test_bad_images_are_named(source: Any, param: str) -> None:
    raw = body(messages=[{"role": "user", "content": [{"type": "image", "source": source}]}])
    assert refused(raw).param == param


def test_tool_use_round_trip_and_passed_back_thinking() -> None:
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    p = parse_messages(body(messages=messages, tools=[WEATHER]), strict=False)
    roles = [m.role for m in p.messages]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assistant = p.messages[1]
    assert assistant.text == "Let me check."  # thinking dropped: Cursor keeps no signatures
    (call,) = assistant.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("toolu_1", "get_weather", {"city": "Oslo"})
    assert (p.messages[2].tool_call_id, p.messages[2].text) == ("toolu_1", "Sunny")
    assert p.messages[3].tool_call_id == "toolu_2"
    assert p.messages[3].content == (TextPart("[tool error] "), TextPart("boom"))
    assert p.messages[4].text == "thanks"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "system", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": 3}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "document", "source": {}}]}, "messages[0].content[0].type"),
        (
            {"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]},
            "messages[0].content[0].type",
        ),
        (
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": []}]},
            "messages[0].content[0].input",
        ),
        (
            {"role": "user", "content": [{"type": "tool_result", "content": "x"}]},
            "messages[0].content[0].tool_use_id",
        ),
        (
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]},
            "messages[0].content[0].is_error",
        ),
        ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
        ("hello", "messages[0]"),
    ],
)
def test_bad_messages_are_named(message: Any, param: str) -> None:
    assert refused(body(messages=[message])).param == param


def test_custom_tools_become_function_tools() -> None:
    p = parse_messages(body(tools=[WEATHER, {**WEATHER, "name": "other", "type": "custom"}]), strict=False)
    assert p.tools[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": WEATHER["input_schema"],
            "description": "Weather for a city",
        },
    }
    assert p.tools[1]["function"]["name"] == "other"


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "web_search_20250305", "name": "web_search"}, "tools[0].type"),
        ({"type": "bash_20250124", "name": "bash"}, "tools[0].type"),
        ({"name": "x"}, "tools[0].input_schema"),
        ({"name": "bad name!", "input_schema": {}}, "tools[0].name"),
        ({"name": "x", "description": 3, "input_schema": {}}, "tools[0].description"),
    ],
)
def test_bad_and_server_tools_are_refused(tool: dict[str, Any], param: str) -> None:
    err = refused(body(tools=[tool]))
    assert err.param == param
    assert ".function" not in err.message


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", True),
        ({"type": "any"}, "required", True),
        ({"type": "none"}, "none", True),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            True,
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice_mapping(choice: dict[str, Any], expected: Any, parallel: bool) -> None:
    p = parse_messages(body(tools=[WEATHER], tool_choice=choice), strict=False)
    assert p.tool_choice == expected and p.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("choice", "param"),
    [
        ({"type": "tool", "name": "nope"}, "tool_choice.name"),
        ({"type": "sometimes"}, "tool_choice.type"),
        ("auto", "tool_choice"),
        ({"type": "auto", "disable_parallel_tool_use": "yes"}, "tool_choice.disable_parallel_tool_use"),
    ],
)
def test_bad_tool_choice_is_named(choice: Any, param: str) -> None:
    assert refused(body(tools=[WEATHER], tool_choice=choice)).param == param


def test_any_without_tools_is_refused_in_anthropic_terms() -> None:
    err = refused(body(tool_choice={"type": "any"}))
    assert err.param == "tool_choice" and "'any'" in err.message


@pytest.mark.parametrize(
    ("thinking", "output_config", "effort"),
    [
        (None, None, None),
        ({"type": "disabled"}, None, "none"),
        ({"type": "adaptive"}, None, None),
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, None, "high"),
        ({"type": "enabled", "budget_tokens": 2000}, {"effort": "max"}, "xhigh"),
        (None, {"effort": "low"}, "low"),
    ],
)
def test_thinking_maps_to_reasoning_effort(thinking: Any, output_config: Any, effort: str | None) -> None:
    assert effort_for(thinking, output_config, max_tokens=32000) == effort
    raw = body(max_tokens=32000, thinking=thinking, output_config=output_config)
    assert parse_messages(raw, strict=False).reasoning_effort == effort


@pytest.mark.parametrize(
    ("thinking", "param"),
    [
        ({"type": "enabled"}, "thinking.budget_tokens"),
        ({"type": "enabled", "budget_tokens": 500}, "thinking.budget_tokens"),
        ({"type": "enabled", "budget_tokens": 2048}, "thinking.budget_tokens"),  # >= max_tokens (2048)
        ({"type": "on"}, "thinking.type"),
        (True, "thinking"),
    ],
)
def test_bad_thinking_is_named(thinking: Any, param: str) -> None:
    assert refused(body(max_tokens=2048, thinking=thinking)).param == param


def test_sampling_and_unknown_fields_are_listed_as_ignored_or_refused_in_strict_mode() -> None:
    raw = body(temperature=0.5, top_p=0.9, top_k=40, service_tier="auto", metadata={"user_id": "u1", "x": 1})
    p = parse_messages(raw, strict=False)
    assert p.ignored == ["service_tier", "temperature", "top_k", "top_p", "metadata.x"]
    assert p.user == "u1"
    assert refused(raw, strict=True).param == "service_tier"
    assert parse_messages(body(metadata={"user_id": "u1"}), strict=True).ignored == []


def test_stop_sequences() -> None:
    assert parse_messages(body(stop_sequences=["END", "\n\nHuman:"]), strict=False).stop_sequences == (
        "END",
        "\n\nHuman:",
    )
    assert refused(body(stop_sequences=["ok", ""])).param == "stop_sequences[1]"
    assert refused(body(stop_sequences="END")).param == "stop_sequences"


def test_count_tokens_estimates_everything_the_prompt_carries() -> None:
    small = {"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}
    with_system = {**small, "system": "You are a very careful assistant. " * 10}
    with_tools = {**with_system, "tools": [WEATHER]}
    counts = [count_tokens(b) for b in (small, with_system, with_tools)]
    assert counts[0] >= 1 and counts[0] < counts[1] < counts[2]
    with pytest.raises(APIError) as info:
        count_tokens({"model": "auto", "messages": []})
    assert info.value.param == "messages"


def test_structured_output_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    raw = body(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "high", "x": 1})
    p = parse_messages(raw, strict=False)
    assert p.response_format == expected and p.reasoning_effort == "high"
    assert p.ignored == ["output_config.x"]
    beta = parse_messages(body(output_format={"type": "json_schema", "schema": schema}), strict=False)
    assert beta.response_format == expected and beta.ignored == []
    assert parse_messages(body(), strict=False).response_format is None
    assert refused(body(output_config={"format": {"type": "text"}})).param == "output_config.format.type"
    assert refused(body(output_format={"type": "json_schema", "schema": []})).param == "output_format.schema"
    assert refused(body(output_config={"effort": "extreme"})).param == "output_config.effort"
