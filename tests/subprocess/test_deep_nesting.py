"""Issue 12 item 3: JSON nested past Python's recursion limit, in a caller's tool-call history or
in the model's tool-call block, is handled (shown as text, or an invalid call), never a
RecursionError, on the CLI transports that emulate tools in the prompt."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cursorpipe import CursorClient
from cursorpipe._tool_emulation import CLOSE_TAG, OPEN_TAG, EmulatedToolParser, render_history
from cursorpipe.testing.fake_agent.catalog import expected_reply
from cursorpipe.types import ToolSpec, normalize_messages

DEEP = "[" * 100_000 + "]" * 100_000
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def _history() -> list[dict[str, object]]:
    return [
        {"role": "user", "content": "call f"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": DEEP},
        {"role": "user", "content": "and now?"},
    ]


def test_deep_history_renders_as_text() -> None:
    rendered = render_history(normalize_messages(_history()))
    assert any(DEEP in m.text for m in rendered if m.role == "assistant")


def test_deep_tool_block_from_the_model_is_an_invalid_call() -> None:
    parser = EmulatedToolParser([ToolSpec(name="f", description="", parameters={"type": "object"})])
    assert parser.feed(f'{OPEN_TAG}{{"tool_calls": [{{"name": "f", "arguments": {DEEP}}}]}}{CLOSE_TAG}') == ""
    _, calls = parser.finish()
    assert len(calls) == 1 and calls[0].error is not None and "deep" in calls[0].error


@pytest.mark.parametrize("strategy", ["subprocess", "acp"])
async def test_deep_history_through_the_agent(
    strategy: str, make_client: Callable[..., CursorClient]
) -> None:
    async with make_client(strategy=strategy, max_retries=0) as client:  # closed: no agent left
        result = await client.complete("auto", _history(), tools=[TOOL])
        assert result.text or result.tool_calls or result.invalid_tool_calls
        assert await client.generate("auto", "after") == expected_reply("after")
