"""The real flow against Cursor's backend. Runs only when CURSOR_API_KEY is set (``live`` marker;
tests/conftest.py skips it otherwise). Nothing here is recorded; to record cassettes against Cursor
use ``.venv/bin/python scripts/record_cassettes.py --live``."""

from __future__ import annotations

import os

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.errors import ModelNotFoundError
from cursorpipe.transports.connect import ConnectTransport
from cursorpipe.types import TextDelta, TurnEnd

# Read at import time: the autouse fixture of tests/conftest.py removes credentials from the
# environment of every test.
LIVE_KEY = os.environ.get("CURSOR_API_KEY", "")
LIVE_BACKEND = os.environ.get("CURSOR_BACKEND_URL", "https://api2.cursor.sh")
LIVE_MODEL = os.environ.get("CURSORPIPE_LIVE_MODEL", "auto")
HOSTS = ["api2.cursor.sh", "api.cursor.com", "127.0.0.1", "::1", "localhost"]

pytestmark = [pytest.mark.live, pytest.mark.allow_hosts(HOSTS), pytest.mark.timeout(180)]


def client(mode: str) -> CursorClient:
    config = CursorPipeConfig(strategy="connect", api_key=LIVE_KEY, backend_url=LIVE_BACKEND, use_http2=mode)
    return CursorClient(config, transport=ConnectTransport(config))


@pytest.mark.parametrize("mode", ["never", "always"])
async def test_live_stream_with_usage(mode: str) -> None:
    async with client(mode) as c:
        events = [e async for e in c.events(LIVE_MODEL, prompt="Reply with the single word: pong")]
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and not e.notice)
    assert "pong" in text.lower()
    end = events[-1]
    assert isinstance(end, TurnEnd) and end.usage is not None and not end.usage.estimated


async def test_live_session_keeps_history() -> None:
    async with client("auto") as c, c.session(LIVE_MODEL) as s:
        await s.prompt("Remember the number 7261. Reply only with OK.")
        answer = await s.prompt("Which number did I ask you to remember? Reply with digits only.")
    assert "7261" in answer.text


async def test_live_chat_with_history_and_system_prompt() -> None:
    async with client("auto") as c:
        answer = await c.chat(
            LIVE_MODEL,
            [
                {"role": "system", "content": "Always answer in uppercase letters."},
                {"role": "user", "content": "My favourite colour is teal."},
                {"role": "assistant", "content": "NOTED."},
                {"role": "user", "content": "What is my favourite colour? One word."},
            ],
        )
    assert "teal" in answer.lower()


async def test_live_models_and_bad_model() -> None:
    async with client("auto") as c:
        models = await c.list_models()
        assert models and all(m.id for m in models)
        with pytest.raises(ModelNotFoundError) as info:
            await c.generate("cursorpipe-no-such-model", "hi")
    assert info.value.available
