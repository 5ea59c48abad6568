"""Structured output: instructions, extraction, validation, one repair round, typed failure."""

from __future__ import annotations

import pytest
from cursorpipe import ConfigurationError, CursorClient, MockTransport, StructuredOutputError
from cursorpipe._structured import extract_json, parse_response_format

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


async def test_valid_answer_is_parsed() -> None:
    mock = MockTransport()
    mock.queue('```json\n{"name": "Ada", "age": 36}\n```')
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="who?", response_format=SCHEMA)
    assert result.parsed == {"name": "Ada", "age": 36}
    instructions = mock.requests[0].messages[0]
    assert instructions.role == "system" and '"age"' in instructions.text
    assert len(mock.requests) == 1


async def test_invalid_answer_is_repaired_once() -> None:
    mock = MockTransport()
    mock.queue('{"name": "Ada", "age": "old"}', 'Sure! {"name": "Ada", "age": 36} hope that helps')
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="who?", response_format=SCHEMA)
    assert result.parsed == {"name": "Ada", "age": 36}
    repair = mock.requests[1].messages
    assert repair[-2].role == "assistant" and "old" in repair[-2].text
    assert "age" in repair[-1].text and "not valid" in repair[-1].text


async def test_still_invalid_after_repair_raises_typed_error() -> None:
    mock = MockTransport()
    mock.queue("no json here", '{"name": 1}')
    async with CursorClient(transport=mock) as client:
        with pytest.raises(StructuredOutputError) as info:
            await client.complete("auto", prompt="who?", response_format=SCHEMA)
    assert info.value.raw == '{"name": 1}'
    assert "schema" in info.value.message


async def test_json_object_mode() -> None:
    mock = MockTransport()
    mock.queue('{"ok": true}')
    async with CursorClient(transport=mock) as client:
        result = await client.complete("auto", prompt="x", response_format={"type": "json_object"})
    assert result.parsed == {"ok": True}


@pytest.mark.parametrize(
    "bad",
    [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}}, "json"],
)
def test_bad_response_format_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_response_format(bad)  # type: ignore[arg-type]


def test_extract_json_tolerates_prose() -> None:
    assert extract_json("Here: [1, 2] done") == [1, 2]
    assert extract_json('x {bad} y {"a": 1}') == {"a": 1}
    with pytest.raises(StructuredOutputError):
        extract_json("nothing")
    assert parse_response_format({"type": "text"}) is None
