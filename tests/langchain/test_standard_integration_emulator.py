"""langchain-tests' standard integration suite for ChatCursor against the Cursor API emulator.

The whole stack runs for real: ChatCursor -> CursorClient -> the connect transport (auth exchange,
Connect framing, RunSSE/BidiAppend or h2 Run) -> the emulator on loopback. The emulator starts once
per module in a thread, so the suite's sync tests (on cursorpipe's sync bridge loop) and async
tests (each on its own loop, whose client ChatCursor closes together with the loop) both reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cursorpipe.testing.emulator import Behaviour, Emulator
from langchain_core.language_models import BaseChatModel
from langchain_cursorpipe import ChatCursor
from langchain_tests.integration_tests import ChatModelIntegrationTests

from ..adapters.tool_model import emulator_reply

_STATE: dict[str, Emulator] = {}


def _params() -> dict[str, Any]:
    emu = _STATE["emu"]
    return {"model": "auto", "strategy": "connect", "backend_url": emu.url, "api_key": emu.api_key}


@pytest.fixture(scope="module", autouse=True)
def emulator() -> Iterator[Emulator]:
    # Tools go over the connect transport's native MCP tool channel, where the emulator's default
    # rule decides the calls (a tool named in the question, or any tool when one is required); the
    # fake model of tests/adapters/tool_model.py writes the text: JSON for structured output, the
    # answer after tool results, otherwise an echo.
    with Emulator.start_in_thread(Behaviour(reply=emulator_reply)) as emu:
        _STATE["emu"] = emu
        try:
            yield emu
        finally:
            ChatCursor(**_params()).close()  # the sync bridge loop's client
            _STATE.clear()


class TestChatCursorOverEmulator(ChatModelIntegrationTests):
    """Standard integration tests, tool calling and structured output included."""

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

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "claude-4.5-sonnet"
