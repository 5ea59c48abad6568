"""The acp transport against Cursor's real ``agent acp``. Runs only with CURSOR_API_KEY set (``live``
marker, see tests/conftest.py) and the ``agent`` CLI installed (CURSORPIPE_LIVE_AGENT_BIN or
``agent`` on PATH)."""

from __future__ import annotations

import os
import shutil

import pytest
from cursorpipe import CursorClient, CursorPipeConfig, TextDelta, ThinkingDelta, TurnEnd

# Read at import time: the autouse fixture of tests/conftest.py scrubs credentials per test.
LIVE_KEY = os.environ.get("CURSOR_API_KEY", "")
LIVE_MODEL = os.environ.get("CURSORPIPE_LIVE_MODEL", "auto")
AGENT = os.environ.get("CURSORPIPE_LIVE_AGENT_BIN") or shutil.which("agent") or ""

pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not AGENT, reason="Cursor's `agent` CLI is not installed"),
]


def client() -> CursorClient:
    return CursorClient(CursorPipeConfig(strategy="acp", agent_bin=AGENT, api_key=LIVE_KEY, max_retries=1))


async def test_live_acp_stream_and_models() -> None:
    async with client() as c:
        models = await c.list_models()
        assert any(m.id == "auto" for m in models)
        events = [e async for e in c.events(LIVE_MODEL, prompt="Reply with the single word: pong")]
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and not e.notice)
    assert "pong" in text.lower()
    assert isinstance(events[-1], TurnEnd) and events[-1].usage is not None and events[-1].usage.estimated
    assert all(not isinstance(e, ThinkingDelta) or e.text for e in events)


async def test_live_acp_session_keeps_history() -> None:
    async with client() as c, c.session(LIVE_MODEL) as s:
        await s.prompt("Remember the number 7261. Reply only with OK.")
        answer = await s.prompt("Which number did I ask you to remember? Reply with digits only.")
    assert "7261" in answer.text
