"""CursorLLM against real Cursor (``live``: skipped without CURSOR_API_KEY)."""

from __future__ import annotations

import os

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cursorpipe import CursorLLM

pytestmark = pytest.mark.live

# Read at import: the root conftest scrubs credentials from the environment of every test.
_API_KEY = os.environ.get("CURSOR_API_KEY", "")


def test_live_chat_stream_and_usage() -> None:
    llm = CursorLLM(model="auto", api_key=_API_KEY, strategy="connect")
    try:
        response = llm.chat([ChatMessage(role=MessageRole.USER, content="Reply with the single word: pong")])
        assert "pong" in (response.message.content or "").lower()
        assert response.raw["usage"]["completion_tokens"] > 0
        streamed = list(llm.stream_complete("Count from one to three."))
        assert streamed[-1].text.strip()
    finally:
        llm.close()


async def test_live_session_remembers() -> None:
    llm = CursorLLM(model="auto", api_key=_API_KEY, strategy="connect")
    try:
        async with llm.with_session() as chat:
            await chat.acomplete("Remember this code word: heliotrope. Reply with OK.")
            reply = await chat.acomplete("What was the code word? Reply with the word only.")
        assert "heliotrope" in reply.text.lower()
    finally:
        await llm.aclose()


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")  # see test_tools.py
async def test_live_function_agent_uses_the_tool() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    def secret_number(name: str) -> str:
        """Look up the secret number stored under a name."""
        return "7431" if name.lower() == "ada" else "0"

    llm = CursorLLM(model="auto", api_key=_API_KEY, strategy="connect")
    try:
        agent = FunctionAgent(tools=[secret_number], llm=llm)
        result = await agent.run(user_msg="Use the secret_number tool to find Ada's secret number.")
        assert [c.tool_name for c in result.tool_calls] == ["secret_number"]
        assert "7431" in str(result)
    finally:
        await llm.aclose()
