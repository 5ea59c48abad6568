"""The one prompt-text algorithm (transports/_prompt_text.py) in both documented formats."""

from __future__ import annotations

import pytest
from cursorpipe.transports._prompt_text import ACP_FORMAT, PRINT_FORMAT, PromptFormat, prompt_text
from cursorpipe.types import ChatMessage, ToolCall

CONVO = [
    ChatMessage.of("system", "Be terse."),
    ChatMessage.of("system", "   "),  # blank system text is dropped in every format
    ChatMessage.of("user", "weather?"),
    ChatMessage(role="assistant", content=(), tool_calls=(ToolCall("c1", "get_weather", '{"city":"Oslo"}'),)),
    ChatMessage.of("tool", "sunny"),
    ChatMessage.of("user", "thanks"),
]


@pytest.mark.parametrize(
    ("fmt", "system", "convo"),
    [(ACP_FORMAT, "system", "conversation"), (PRINT_FORMAT, "system_instructions", "conversation_so_far")],
)
def test_each_format_writes_the_documented_layout(fmt: PromptFormat, system: str, convo: str) -> None:
    assert prompt_text(CONVO, fmt) == (
        f"<{system}>\nBe terse.\n</{system}>\n\n"
        f"<{convo}>\nUser: weather?\n\n"
        'Assistant: [called: get_weather({"city":"Oslo"})]\n\n'
        f"Tool result: sunny\n</{convo}>\n\n"
        "thanks"
    )


@pytest.mark.parametrize("fmt", [ACP_FORMAT, PRINT_FORMAT])
def test_a_lone_user_message_is_verbatim(fmt: PromptFormat) -> None:
    assert prompt_text([ChatMessage.of("user", "  -rf / ")], fmt) == "  -rf / "
    assert prompt_text([ChatMessage.of("system", " "), ChatMessage.of("user", "x")], fmt) == "x"


def test_only_print_mode_asks_to_continue_after_an_assistant_message() -> None:
    msgs = [ChatMessage.of("user", "q"), ChatMessage.of("assistant", "partial")]
    print_text = prompt_text(msgs, PRINT_FORMAT)
    acp_text = prompt_text(msgs, ACP_FORMAT)
    assert print_text.endswith("</conversation_so_far>\n\nContinue the conversation as the assistant.")
    assert acp_text == "<conversation>\nUser: q\n\nAssistant: partial\n</conversation>"


def test_system_only_request() -> None:
    assert prompt_text([ChatMessage.of("system", "rules")], ACP_FORMAT) == "<system>\nrules\n</system>"
