"""ChatCursor tool calling and structured output (issue 7), over MockTransport and the emulator.

The fake model of ``tests/adapters/tool_model.py`` answers through cursorpipe's emulated tool
protocol (MockTransport has no tool channel by default); tests that need the native event shape
(streamed argument deltas) script the events directly on a mock that claims a tool channel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from cursorpipe import (
    ConfigurationError,
    CursorClient,
    MockTransport,
    StructuredOutputError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    TransportCapabilities,
    TurnEnd,
)
from cursorpipe.testing.emulator import Behaviour, Emulator
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_cursorpipe import ChatCursor
from pydantic import BaseModel, Field

from ..adapters.tool_model import emulator_reply, expected_answer, mock_script


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny and 21 C in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int = Field(description="age in years", ge=0)


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: str
    age: int


@pytest.fixture
def mock() -> MockTransport:
    return MockTransport(script=mock_script)


@pytest.fixture
def llm(mock: MockTransport) -> ChatCursor:
    return ChatCursor(model="auto", client=CursorClient(transport=mock))


def _native_mock() -> MockTransport:
    return MockTransport(capabilities=TransportCapabilities(native_tools=True))


def _aggregate(chunks: Iterator[BaseMessage]) -> AIMessageChunk:
    full: AIMessageChunk | None = None
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full is not None
    return full


# ------------------------------------------------------------------------------------------------
# bind_tools and tool_choice
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        (True, "required"),
        ("add", {"type": "function", "function": {"name": "add"}}),
        (
            {"type": "function", "function": {"name": "add"}},
            {"type": "function", "function": {"name": "add"}},
        ),
    ],
)
def test_tool_choice_forms_reach_the_request(
    llm: ChatCursor, mock: MockTransport, choice: Any, sent: Any
) -> None:
    llm.bind_tools([get_weather, add], tool_choice=choice).invoke("What is 2 plus 3?")
    request = mock.requests[-1]
    assert [t.name for t in request.tools] == ["get_weather", "add"]
    assert request.tools[1].parameters["required"] == ["a", "b"]
    assert request.tool_choice == sent


def test_true_with_one_tool_forces_it(llm: ChatCursor, mock: MockTransport) -> None:
    result = llm.bind_tools([add], tool_choice=True).invoke("Hello!")
    assert mock.requests[-1].tool_choice == {"type": "function", "function": {"name": "add"}}
    assert isinstance(result, AIMessage) and [c["name"] for c in result.tool_calls] == ["add"]


def test_unknown_tool_choice_is_a_typed_error(llm: ChatCursor) -> None:
    with pytest.raises(ConfigurationError, match="multiply"):
        llm.bind_tools([add], tool_choice="multiply")


def test_invoke_returns_tool_calls(llm: ChatCursor) -> None:
    result = llm.bind_tools([get_weather, add]).invoke("Use add(2, 3) please")
    assert isinstance(result, AIMessage)
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert call["name"] == "add" and call["args"] == {"a": 2, "b": 3}
    assert call["id"] and call.get("type") == "tool_call"
    assert result.response_metadata["finish_reason"] == "tool_calls"
    assert result.content == ""  # the tool block is not shown as text
    assert result.response_metadata["tool_calls_emulated"] is True  # the mock has no tool channel


def test_stream_yields_tool_call_chunks_that_aggregate(llm: ChatCursor) -> None:
    chunks = list(llm.bind_tools([get_weather]).stream("What is the weather in Oslo?"))
    with_tools = [c for c in chunks if isinstance(c, AIMessageChunk) and c.tool_call_chunks]
    assert with_tools, "no tool_call_chunks streamed"
    first = with_tools[0].tool_call_chunks[0]
    assert first["id"] and first["name"] == "get_weather" and first["index"] is not None
    full = _aggregate(iter(chunks))
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert full.response_metadata["finish_reason"] == "tool_calls"


async def test_native_argument_deltas_stream_with_index_and_id() -> None:
    mock = _native_mock()
    mock.queue(
        [
            TextDelta("Let me check."),
            ToolCallDelta(index=0, id="call_1", name="add", arguments_delta='{"a": 2, '),
            ToolCallDelta(index=0, arguments_delta='"b": 40}'),
            ToolCallEvent(ToolCall("call_1", "add", '{"a": 2, "b": 40}'), index=0),
            ToolCallDelta(index=1, id="call_2", name="get_weather", arguments_delta='{"city": "Rome"}'),
            ToolCallEvent(ToolCall("call_2", "get_weather", '{"city": "Rome"}'), index=1),
            TurnEnd("tool_calls"),
        ]
    )
    llm = ChatCursor(client=CursorClient(transport=mock)).bind_tools([add, get_weather])
    chunks = [c async for c in llm.astream("go")]
    deltas = [tc for c in chunks if isinstance(c, AIMessageChunk) for tc in c.tool_call_chunks]
    assert [d["args"] for d in deltas] == ['{"a": 2, ', '"b": 40}', '{"city": "Rome"}']
    # Each call keeps one index across its deltas; the two calls differ (and differ from the text block).
    assert deltas[0]["index"] == deltas[1]["index"] != deltas[2]["index"]
    full = _aggregate(iter(chunks))
    assert full.content == "Let me check."
    assert [(c["id"], c["args"]) for c in full.tool_calls] == [
        ("call_1", {"a": 2, "b": 40}),
        ("call_2", {"city": "Rome"}),
    ]
    mock.queue(
        [
            ToolCallDelta(index=0, id="call_3", name="add", arguments_delta='{"a": 1, "b": 1}'),
            ToolCallEvent(ToolCall("call_3", "add", '{"a": 1, "b": 1}'), index=0),
            TurnEnd("tool_calls"),
        ]
    )
    result = await llm.ainvoke("again")
    assert isinstance(result, AIMessage) and result.tool_calls[0]["args"] == {"a": 1, "b": 1}


def test_unparsable_tool_block_is_an_invalid_tool_call(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue("<tool_calls>{not json</tool_calls>")
    result = llm.bind_tools([add]).invoke("add")
    assert isinstance(result, AIMessage)
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert "not valid JSON" in (result.invalid_tool_calls[0]["error"] or "")


def test_unknown_tool_is_an_invalid_tool_call_even_with_valid_json(
    llm: ChatCursor, mock: MockTransport
) -> None:
    mock.queue('<tool_calls>{"tool_calls": [{"name": "rm_rf", "arguments": {"path": "/"}}]}</tool_calls>')
    result = llm.bind_tools([add]).invoke("add")
    assert isinstance(result, AIMessage)
    assert result.tool_calls == []
    [bad] = result.invalid_tool_calls
    assert bad["name"] == "rm_rf" and json.loads(bad["args"] or "") == {"path": "/"}
    assert "unknown tool" in (bad["error"] or "")


def test_tool_history_reaches_cursor_in_openai_shape() -> None:
    mock = _native_mock()
    llm = ChatCursor(client=CursorClient(transport=mock)).bind_tools([add])
    history = [
        HumanMessage("What is 2 + 3?"),
        AIMessage(
            "", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_9", "type": "tool_call"}]
        ),
        ToolMessage("5", tool_call_id="call_9", name="add"),
    ]
    llm.invoke(history)
    messages = mock.requests[-1].messages
    assistant = next(m for m in messages if m.role == "assistant")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("call_9", "add", {"a": 2, "b": 3})
    ]
    tool_msg = next(m for m in messages if m.role == "tool")
    assert tool_msg.tool_call_id == "call_9" and tool_msg.text == "5"


def test_tools_on_a_session_are_a_typed_error(llm: ChatCursor) -> None:
    with llm.with_session() as chat, pytest.raises(ConfigurationError, match="session"):
        chat.bind_tools([add]).invoke("add 1 and 2")


# ------------------------------------------------------------------------------------------------
# agent loop: model -> Python function -> ToolMessage -> model
# ------------------------------------------------------------------------------------------------
def _agent_loop(llm: ChatCursor, question: str) -> tuple[AIMessage, list[BaseMessage]]:
    tools = {t.name: t for t in (get_weather, add)}
    bound = llm.bind_tools(list(tools.values()))
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(4):
        reply = bound.invoke(messages)
        assert isinstance(reply, AIMessage)
        messages.append(reply)
        if not reply.tool_calls:
            return reply, messages
        for call in reply.tool_calls:
            messages.append(tools[call["name"]].invoke(call))
    raise AssertionError("the agent loop did not finish")


def test_agent_loop_over_mock(llm: ChatCursor, mock: MockTransport) -> None:
    answer, messages = _agent_loop(llm, "What is the weather in Lisbon?")
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "sunny and 21 C in Lisbon"
    assert answer.content == expected_answer(["sunny and 21 C in Lisbon"])
    assert len(mock.requests) == 2


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator.start_in_thread(Behaviour(reply=emulator_reply)) as emu:
        yield emu


def _emulator_llm(emu: Emulator) -> ChatCursor:
    return ChatCursor(model="auto", strategy="connect", backend_url=emu.url, api_key=emu.api_key)


async def test_agent_loop_against_the_emulator(emulator: Emulator) -> None:
    llm = _emulator_llm(emulator)
    try:
        bound = llm.bind_tools([get_weather, add])
        messages: list[BaseMessage] = [HumanMessage("Please add(a=19, b=23) for me")]
        reply = await bound.ainvoke(messages)
        assert isinstance(reply, AIMessage) and reply.tool_calls[0]["args"] == {"a": 19, "b": 23}
        messages += [reply, await add.ainvoke(reply.tool_calls[0])]
        final = await bound.ainvoke(messages)
        assert final.content == expected_answer(["42"])
        assert final.response_metadata["transport"] == "connect"
        assert "tool_calls_emulated" not in reply.response_metadata  # Cursor's own tool channel
        # The call went through Cursor's MCP tool channel, and the result came back in history.
        runs = [r for r in emulator.runs if "add" in r.tools_offered]
        assert [c.name for c in runs[-2].tool_calls] == ["add"]
        assert [r.text for r in runs[-1].tool_results] == ["42"]
    finally:
        await llm.aclose()


# ------------------------------------------------------------------------------------------------
# structured output
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_pydantic(llm: ChatCursor, method: str) -> None:
    person = llm.with_structured_output(Person, method=method).invoke("Ada is age=36")  # type: ignore[arg-type]
    assert isinstance(person, Person) and person.age == 36


@pytest.mark.parametrize("schema", [PersonDict, Person.model_json_schema()])
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_dict_schemas(llm: ChatCursor, schema: Any, method: str) -> None:
    value = llm.with_structured_output(schema, method=method).invoke("Grace, age=85")  # type: ignore[arg-type]
    assert isinstance(value, dict) and value["age"] == 85 and isinstance(value["name"], str)


def test_json_schema_method_sends_the_schema_and_streams_the_value(
    llm: ChatCursor, mock: MockTransport
) -> None:
    chunks = list(llm.with_structured_output(Person).stream("Alan, age=41"))
    assert chunks and isinstance(chunks[-1], Person) and chunks[-1].age == 41
    system = "\n".join(m.text for m in mock.requests[-1].messages if m.role == "system")
    assert '"age"' in system and "Person" in system


def test_json_schema_method_repairs_once(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue('{"name": "Ada"}', '{"name": "Ada", "age": 36}')
    person = llm.with_structured_output(Person).invoke("Ada")
    assert isinstance(person, Person) and person.age == 36
    assert len(mock.requests) == 2
    assert "not valid" in mock.requests[1].messages[-1].text


def test_json_schema_method_raises_after_the_repair(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue("no json here", "still none")
    with pytest.raises(StructuredOutputError) as info:
        llm.with_structured_output(Person).invoke("Ada")
    assert info.value.raw == "still none"


def test_include_raw_reports_the_parsing_error(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue("no json here", "still none")
    out = llm.with_structured_output(Person, include_raw=True).invoke("Ada")
    assert isinstance(out, dict)
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], StructuredOutputError)
    assert isinstance(out["raw"], AIMessage) and out["raw"].content == "still none"
    good = llm.with_structured_output(Person, include_raw=True).invoke("Ada, age=3")
    assert isinstance(good, dict) and good["parsing_error"] is None
    assert isinstance(good["parsed"], Person) and isinstance(good["raw"], AIMessage)


def test_function_calling_include_raw_keeps_the_tool_call(llm: ChatCursor) -> None:
    out = llm.with_structured_output(Person, method="function_calling", include_raw=True).invoke("Bo, age=7")
    assert isinstance(out, dict) and isinstance(out["parsed"], Person)
    assert out["raw"].tool_calls[0]["name"] == "Person"


def test_json_mode(llm: ChatCursor, mock: MockTransport) -> None:
    value = llm.with_structured_output(None, method="json_mode").invoke(  # type: ignore[arg-type]
        "Return JSON with 'city' and 'country'"
    )
    assert isinstance(value, dict) and set(value) == {"city", "country"}
    system = "\n".join(m.text for m in mock.requests[-1].messages if m.role == "system")
    assert "JSON object" in system


def test_structured_output_rejects_unknown_arguments(llm: ChatCursor) -> None:
    with pytest.raises(ConfigurationError, match="bogus"):
        llm.with_structured_output(Person, bogus=True)
    with pytest.raises(ConfigurationError, match="method"):
        llm.with_structured_output(Person, method="xml")  # type: ignore[arg-type]


async def test_structured_output_against_the_emulator(emulator: Emulator) -> None:
    llm = _emulator_llm(emulator)
    try:
        person = await llm.with_structured_output(Person).ainvoke("Linus, age=29")
        assert isinstance(person, Person) and person.age == 29
    finally:
        await llm.aclose()
