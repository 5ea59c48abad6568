"""langchain-tests' standard integration suite for ChatCursor over cursorpipe's MockTransport.

The mock sits below the real ``CursorClient`` (retries, limits, stop enforcement all run), so this
proves the adapter's translation independently of any wire protocol; the same suite runs against
the Cursor API emulator in ``test_standard_integration_emulator.py``.
"""

from __future__ import annotations

from typing import Any

from cursorpipe import CursorClient, MockTransport
from langchain_core.language_models import BaseChatModel
from langchain_cursorpipe import ChatCursor
from langchain_tests.integration_tests import ChatModelIntegrationTests

from ..adapters.tool_model import mock_script


class TestChatCursorOverMock(ChatModelIntegrationTests):
    """Standard integration tests, tool calling and structured output included."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatCursor

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # MockTransport holds no loop-bound resources, so one client may serve every loop. The
        # scripted fake model calls offered tools and answers JSON requests (tests/adapters/
        # tool_model.py) through the core's emulated tool protocol (the mock has no tool channel).
        transport = MockTransport(thinking="Let me think.", script=mock_script)
        return {"model": "auto", "client": CursorClient(transport=transport)}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "mock-fast"
