"""The Messages route against Cursor's real backend, driven with the ``anthropic`` SDK. Runs only
when CURSOR_API_KEY is set (``live`` marker; tests/conftest.py skips it otherwise)."""

from __future__ import annotations

import os
from typing import Any

import anthropic
import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.server import create_app

# Read at import time: the autouse fixture of tests/conftest.py removes credentials from the
# environment of every test.
LIVE_KEY = os.environ.get("CURSOR_API_KEY", "")
LIVE_BACKEND = os.environ.get("CURSOR_BACKEND_URL", "https://api2.cursor.sh")
LIVE_MODEL = os.environ.get("CURSORPIPE_LIVE_MODEL", "auto")
HOSTS = ["api2.cursor.sh", "api.cursor.com", "127.0.0.1", "::1", "localhost"]

pytestmark = [pytest.mark.live, pytest.mark.allow_hosts(HOSTS), pytest.mark.timeout(240)]

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_live_messages_stream_memory_and_tools(over_socket_app) -> None:
    config = CursorPipeConfig(strategy="connect", api_key=LIVE_KEY, backend_url=LIVE_BACKEND, pool_size=0)
    url = await over_socket_app(create_app(config))
    async with anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0, timeout=180) as client:
        async with client.messages.stream(
            model=LIVE_MODEL,
            max_tokens=200,
            system="Always answer in uppercase letters.",
            messages=[
                {"role": "user", "content": "My favourite colour is teal."},
                {"role": "assistant", "content": "NOTED."},
                {"role": "user", "content": "What is my favourite colour? One word."},
            ],
        ) as stream:
            final = await stream.get_final_message()
        text = "".join(b.text for b in final.content if b.type == "text")
        assert "teal" in text.lower() and final.usage.output_tokens > 0

        first = await client.messages.create(
            model=LIVE_MODEL,
            max_tokens=300,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        )
        (call,) = [b for b in first.content if b.type == "tool_use"][:1]
        assert first.stop_reason == "tool_use" and call.name == "get_weather"
        done = await client.messages.create(
            model=LIVE_MODEL,
            max_tokens=300,
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": "What is the weather in Oslo?"},
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "17C and sunny"}],
                },
            ],
        )
        assert "17" in "".join(b.text for b in done.content if b.type == "text")
