"""ChatCursor against real Cursor (``live``: skipped without CURSOR_API_KEY)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_cursorpipe import ChatCursor
from langchain_tests.integration_tests import ChatModelIntegrationTests

pytestmark = pytest.mark.live

# Read at import: the root conftest scrubs credentials from the environment of every test.
_API_KEY = os.environ.get("CURSOR_API_KEY", "")


def _params() -> dict[str, Any]:
    return {"model": "auto", "api_key": _API_KEY, "strategy": "connect"}


@pytest.fixture(scope="module", autouse=True)
def _close_sync_client() -> Iterator[None]:
    yield
    if _API_KEY:
        ChatCursor(**_params()).close()


def test_live_invoke_stream_and_usage() -> None:
    llm = ChatCursor(**_params())
    result = llm.invoke("Reply with the single word: pong")
    assert "pong" in str(result.content).lower()
    assert result.usage_metadata is not None and result.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("Count from one to three."))
    assert chunks[-1].chunk_position == "last"
    assert "".join(str(c.content) for c in chunks).strip()


async def test_live_session_remembers() -> None:
    async with ChatCursor(**_params()).with_session() as chat:
        await chat.ainvoke("Remember this code word: heliotrope. Reply with OK.")
        reply = await chat.ainvoke("What was the code word? Reply with the word only.")
    assert "heliotrope" in str(reply.content).lower()


def test_live_tool_round_trip() -> None:
    from langchain_core.messages import BaseMessage, HumanMessage
    from langchain_core.tools import tool

    @tool
    def secret_number(name: str) -> str:
        """Look up the secret number stored under a name."""
        return "7431" if name.lower() == "ada" else "0"

    bound = ChatCursor(**_params()).bind_tools([secret_number])
    messages: list[BaseMessage] = [HumanMessage("Use the secret_number tool to find Ada's secret number.")]
    reply = bound.invoke(messages)
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "secret_number"
    messages += [reply, *(secret_number.invoke(call) for call in reply.tool_calls)]
    final = bound.invoke(messages)
    assert "7431" in str(final.content)


class TestChatCursorLive(ChatModelIntegrationTests):
    """The standard integration suite against real Cursor."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatCursor

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
