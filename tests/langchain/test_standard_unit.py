"""langchain-tests' standard unit suite for ChatCursor (offline; no sockets needed at init)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_cursorpipe import ChatCursor
from langchain_tests.unit_tests import ChatModelUnitTests


class TestChatCursorUnit(ChatModelUnitTests):
    """The standard unit tests. Tool calling and structured output follow issue 7; until then the
    suite's own properties turn those tests off."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatCursor

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "auto"}

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
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"CURSOR_API_KEY": "crsr_from_env"},
            {"model": "auto"},
            {"api_key": "crsr_from_env", "model": "auto"},
        )
