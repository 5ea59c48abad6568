"""ChatCursor end to end against the Cursor API emulator: real usage, thinking, history proof,
sessions and typed errors through the connect transport."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cursorpipe import RateLimitError, UsageLimitError
from cursorpipe.testing.emulator import DEFAULT_THINKING, Emulator, Fault, expected_reply
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_cursorpipe import ChatCursor

_STATE: dict[str, Emulator] = {}


def _params(**extra: Any) -> dict[str, Any]:
    emu = _STATE["emu"]
    return {"strategy": "connect", "backend_url": emu.url, "api_key": emu.api_key, "max_retries": 0, **extra}


@pytest.fixture(scope="module", autouse=True)
def emulator() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        _STATE["emu"] = emu
        try:
            yield emu
        finally:
            ChatCursor(**_params()).close()
            _STATE.clear()


@pytest.fixture
def llm() -> ChatCursor:
    return ChatCursor(**_params())


def test_invoke_has_reply_thinking_and_real_usage(llm: ChatCursor) -> None:
    result = llm.invoke("hello")
    assert result.content == expected_reply("hello")
    assert result.additional_kwargs["reasoning_content"] == DEFAULT_THINKING
    assert result.response_metadata["transport"] == "connect"
    assert "usage_estimated" not in result.response_metadata  # the emulator reports real counts
    assert result.usage_metadata is not None and result.usage_metadata["input_tokens"] > 0


def test_stateless_call_sends_the_whole_conversation(llm: ChatCursor) -> None:
    first = llm.invoke("My name is Ada.")
    again = llm.invoke([HumanMessage("My name is Ada."), first, HumanMessage("What is my name?")])
    assert again.content == expected_reply("What is my name?", earlier=2, first="My name is Ada.")


def test_system_prompt_reaches_cursor(llm: ChatCursor) -> None:
    result = llm.invoke([SystemMessage("Answer in French."), HumanMessage("hi")])
    assert result.content == expected_reply("hi", system="Answer in French.")


async def test_session_keeps_history_in_cursor(llm: ChatCursor) -> None:
    async with llm.with_session() as chat:
        first = await chat.ainvoke("My name is Ada.")
        second = await chat.ainvoke([HumanMessage("My name is Ada."), first, HumanMessage("Name?")])
        third = [c async for c in chat.astream("Still there?")]
    assert first.content == expected_reply("My name is Ada.")
    # Cursor, not the caller, supplied the earlier turn: it counts as turn 2 of its conversation.
    assert second.content == expected_reply("Name?", earlier=2, first="My name is Ada.", turns=1)
    assert "".join(str(c.content) for c in third) == expected_reply(
        "Still there?", earlier=4, first="My name is Ada.", turns=2
    )


def test_sync_session(llm: ChatCursor) -> None:
    with llm.with_session() as chat:
        chat.invoke("one")
        assert chat.invoke("two").content == expected_reply("two", earlier=2, first="one", turns=1)


async def test_stream_stops_at_stop_sequence(llm: ChatCursor) -> None:
    chunks = [c async for c in llm.astream("hello world", stop=["world"])]
    text = "".join(str(c.content) for c in chunks)
    assert text == expected_reply("hello world").split("world")[0]
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert chunks[-1].chunk_position == "last"


def test_rate_limit_is_a_typed_error(emulator: Emulator, llm: ChatCursor) -> None:
    emulator.inject(Fault.RATE_LIMIT, retry_after=120)
    with pytest.raises(RateLimitError):
        llm.invoke("hi")


async def test_usage_limit_is_a_typed_error_async(emulator: Emulator, llm: ChatCursor) -> None:
    emulator.inject(Fault.USAGE_LIMIT)
    with pytest.raises(UsageLimitError):
        await llm.ainvoke("hi")
