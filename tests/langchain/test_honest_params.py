"""ChatCursor is honest about its parameters (issue 15): ``parallel_tool_calls=False`` is honoured,
sampling parameters Cursor lacks are named in one warning per instance, and reasoning-only chunks
fire no empty ``on_llm_new_token`` callbacks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cursorpipe import (
    CursorClient,
    MockTransport,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
    TransportCapabilities,
    TurnEnd,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_cursorpipe import ChatCursor


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """Get the local time in a city."""
    return f"noon in {city}"


def _two_calls() -> list[Any]:
    return [
        ToolCallEvent(ToolCall(id="c1", name="get_weather", arguments='{"city": "Oslo"}'), index=0),
        ToolCallEvent(ToolCall(id="c2", name="get_time", arguments='{"city": "Oslo"}'), index=1),
        TurnEnd("tool_calls"),
    ]


def _native_llm() -> tuple[ChatCursor, MockTransport]:
    mock = MockTransport(capabilities=TransportCapabilities(native_tools=True))
    return ChatCursor(client=CursorClient(transport=mock)), mock


def _system_text(mock: MockTransport) -> str:
    return "\n".join(m.text for m in mock.requests[-1].messages if m.role == "system")


def test_parallel_tool_calls_false_passes_one_call_and_tells_the_model() -> None:
    llm, mock = _native_llm()
    mock.queue(_two_calls())
    both = llm.bind_tools([get_weather, get_time]).invoke("weather and time in Oslo")
    assert isinstance(both, AIMessage)
    assert [c["name"] for c in both.tool_calls] == ["get_weather", "get_time"]
    assert "at most one tool" not in _system_text(mock)

    mock.queue(_two_calls())
    one = llm.bind_tools([get_weather, get_time], parallel_tool_calls=False).invoke("weather and time")
    assert isinstance(one, AIMessage)
    assert [c["name"] for c in one.tool_calls] == ["get_weather"]
    assert one.invalid_tool_calls == []
    assert "Call at most one tool" in _system_text(mock)

    mock.queue(_two_calls())
    bound = llm.bind_tools([get_weather, get_time], parallel_tool_calls=False)
    full: AIMessageChunk | None = None
    for chunk in bound.stream("weather and time, streamed"):
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full is not None and [c["name"] for c in full.tool_calls] == ["get_weather"]


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def _thinking_mock() -> MockTransport:
    mock = MockTransport()
    for _ in range(3):
        mock.queue(
            [ThinkingDelta("Let me "), ThinkingDelta("think."), TextDelta("The "), TextDelta("answer.")]
        )
    return mock


def _check_tokens(seen: _Tokens, reasoning: str) -> None:
    assert reasoning == "Let me think."  # nothing lost, in order
    assert "".join(seen.tokens) == "The answer.", seen.tokens
    # Every token callback carries text, except the one LangChain fires for the closing chunk.
    assert seen.tokens[:-1] and [t for t in seen.tokens[:-1] if not t] == []


@pytest.mark.parametrize("streaming", [False, True])
def test_reasoning_only_chunks_fire_no_empty_tokens(streaming: bool) -> None:
    # (streaming=False set explicitly would make LangChain's stream() fall back to invoke())
    extra = {"streaming": True} if streaming else {}
    llm = ChatCursor(client=CursorClient(transport=_thinking_mock()), **extra)
    seen = _Tokens()
    if streaming:  # invoke() streams internally and fires the callbacks itself
        message = llm.invoke("q", config={"callbacks": [seen]})
        reasoning = str(message.additional_kwargs["reasoning_content"])
    else:
        chunks = list(llm.stream("q", config={"callbacks": [seen]}))
        reasoning = "".join(str(c.additional_kwargs.get("reasoning_content", "")) for c in chunks)
    _check_tokens(seen, reasoning)


async def test_reasoning_only_chunks_fire_no_empty_tokens_async() -> None:
    llm = ChatCursor(client=CursorClient(transport=_thinking_mock()))
    seen = _Tokens()
    chunks = [c async for c in llm.astream("q", config={"callbacks": [seen]})]
    _check_tokens(seen, "".join(str(c.additional_kwargs.get("reasoning_content", "")) for c in chunks))


def test_ignored_sampling_params_warn_once_per_instance(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="langchain_cursorpipe")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]

    mock = MockTransport()
    quiet = ChatCursor(client=CursorClient(transport=mock))
    quiet.invoke("hi")
    assert warnings() == []

    llm = ChatCursor(client=CursorClient(transport=mock), temperature=0.7, seed=1)
    assert len(warnings()) == 1
    assert "temperature=0.7" in warnings()[0] and "seed=1" in warnings()[0]
    assert "no sampling parameters" in warnings()[0]
    llm.invoke("hi", temperature=0.2)
    llm.invoke("hi", top_p=0.5)
    assert len(warnings()) == 1

    caplog.clear()
    other = ChatCursor(client=CursorClient(transport=mock))
    other.invoke("hi", top_p=0.9)
    other.invoke("hi", top_p=0.9)
    assert len(warnings()) == 1 and "top_p=0.9" in warnings()[0]
