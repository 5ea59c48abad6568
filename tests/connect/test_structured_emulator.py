"""Structured output offline (issue 15): the emulator answers a JSON-schema request with a valid
instance of the schema, as a real model would, so every structured-output surface works against it
without scripting: the core's ``response_format``, ``ChatCursor.with_structured_output``, the
server's ``response_format`` and the openai SDK's ``chat.completions.parse``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe._structured import ResponseFormat
from cursorpipe._tool_emulation import tool_instructions
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, expected_reply, schema_instance
from cursorpipe.testing.emulator._schema import find_schema_request, structured_reply
from cursorpipe.types import ToolSpec
from langchain_cursorpipe import ChatCursor
from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str
    age: int


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Member(BaseModel):
    """Nested models, $defs refs, enums, optional fields, arrays and a recursive reference."""

    name: str
    age: int = Field(ge=0, le=150)
    role: Literal["admin", "editor", "viewer"]
    active: bool
    score: float
    address: Address
    emails: list[str] = Field(min_length=2)
    mentor: Member | None = None
    reports: list[Member] = []


PERSON_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "Person", "schema": Person.model_json_schema()},
}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


def _config(emu: Emulator) -> CursorPipeConfig:
    return CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)


# -- the instance generator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        Person.model_json_schema(),
        Member.model_json_schema(),
        {"type": "array", "items": {"type": "integer", "minimum": 5}, "minItems": 3},
        {"type": "string", "format": "date-time"},
        {"type": "object", "properties": {"n": {"type": "number", "exclusiveMaximum": 0}}, "required": ["n"]},
        {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 12, "maxLength": 14}]},
        {"type": "object", "required": ["x"], "additionalProperties": True},
        {"type": ["integer", "null"], "enum": [3, 4]},
        {"const": {"a": 1}},
        {
            "type": "object",
            "properties": {"a": {"allOf": [{"$ref": "#/definitions/A"}]}},
            "definitions": {"A": {"type": "boolean"}},
        },
    ],
)
def test_schema_instance_is_valid(schema: dict[str, Any]) -> None:
    value = schema_instance(schema, "Grace Hopper was 85, role: editor")
    jsonschema.Draft202012Validator(schema).validate(value)
    assert value == schema_instance(schema, "Grace Hopper was 85, role: editor")  # deterministic


def test_schema_instance_takes_values_from_the_user_message() -> None:
    assert schema_instance(Person.model_json_schema(), "Ada Lovelace was 36.") == {
        "name": "Ada Lovelace",
        "age": 36,
    }
    member = Member.model_validate(
        schema_instance(Member.model_json_schema(), "Grace Hopper, age 85, is an editor; city: Arlington.")
    )
    assert (member.name, member.age, member.role, member.address.city) == (
        "Grace Hopper",
        85,
        "editor",
        "Arlington",
    )
    assert len(member.emails) >= 2 and member.reports and member.reports[0].reports == []


def test_detection_is_narrow() -> None:
    """The core's instructions ask for JSON; a tool-emulation prompt or a prompt that merely
    mentions JSON does not (their scripted reply stays unchanged)."""
    schema = Person.model_json_schema()
    assert find_schema_request([ResponseFormat("Person", schema).instructions()]) == (True, schema)
    assert find_schema_request([ResponseFormat().instructions()]) == (True, None)
    spec = ToolSpec("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    assert find_schema_request([tool_instructions([spec], "auto")]) == (False, None)
    assert structured_reply(["Be brief. You know JSON well."], "hi", "plain") is None


# -- every surface, against the strict emulator ------------------------------------------------


async def test_client_response_format(emu: Emulator) -> None:
    async with CursorClient(_config(emu)) as client:
        result = await client.complete("auto", prompt="Ada Lovelace was 36.", response_format=PERSON_FORMAT)
        assert result.parsed == {"name": "Ada Lovelace", "age": 36}
        assert json.loads(emu.runs[-1].reply) == result.parsed  # one run: no repair round needed
        plain = await client.complete("auto", prompt="Oslo", response_format={"type": "json_object"})
        assert isinstance(plain.parsed, dict) and plain.parsed["answer"].startswith("Emulated reply to: Oslo")
        # a request without a schema keeps the scripted reply format
        text = await client.complete("auto", prompt="hello there")
        assert text.text == expected_reply("hello there")


def test_chat_cursor_with_structured_output(emu: Emulator) -> None:
    llm = ChatCursor(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    try:
        person = llm.with_structured_output(Person).invoke("Ada Lovelace was 36.")
        assert person == Person(name="Ada Lovelace", age=36)
        member = llm.with_structured_output(Member).invoke("Grace Hopper, age 85, an admin")
        assert isinstance(member, Member) and member.name == "Grace Hopper" and member.role == "admin"
        raw = llm.with_structured_output(Person, include_raw=True).invoke("Alan Turing was 41")
        assert raw["parsed"] == Person(name="Alan Turing", age=41) and raw["parsing_error"] is None
        as_json = llm.with_structured_output(None, method="json_mode").invoke("Oslo")
        assert isinstance(as_json, dict) and "answer" in as_json
    finally:
        llm.close()


async def test_server_response_format_and_openai_parse(emu: Emulator) -> None:
    app = create_app(_config(emu), emulated=True)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1", timeout=30
        )
        sdk = openai.AsyncOpenAI(
            api_key="unused", base_url="http://localhost/v1", http_client=http, max_retries=0
        )
        async with sdk:
            completion = await sdk.chat.completions.parse(
                model="auto",
                messages=[{"role": "user", "content": "Ada Lovelace was 36."}],
                response_format=Person,
            )
            message = completion.choices[0].message
            assert message.parsed == Person(name="Ada Lovelace", age=36)
            assert completion.choices[0].finish_reason == "stop"

            raw = await sdk.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "Alan Turing was 41"}],
                response_format=PERSON_FORMAT,  # type: ignore[arg-type]
            )
            assert json.loads(raw.choices[0].message.content or "") == {"name": "Alan Turing", "age": 41}
