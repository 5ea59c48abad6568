"""Prompt tokens are counted once on every surface (live-dialect.md row 13).

Cursor's ``turn_ended.input_tokens`` already includes cache reads and writes. The emulator reports
it that way (with non-zero cache figures), so any surface that adds the cache figures on top shows
a prompt count larger than what the emulator sent, and these tests fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator
from langchain_cursorpipe import ChatCursor
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cursorpipe import CursorLLM


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


def _sent(emu: Emulator) -> dict[str, int]:
    usage = emu.runs[-1].usage
    assert usage is not None
    # The premise of every test here: the emulator's input already contains cache figures.
    assert usage["cache_read_tokens"] > 0 and usage["cache_write_tokens"] > 0
    assert usage["input_tokens"] >= usage["cache_read_tokens"] + usage["cache_write_tokens"]
    return usage


def _config(emu: Emulator) -> CursorPipeConfig:
    return CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)


async def test_client_usage_reports_cursor_input_once(emu: Emulator) -> None:
    async with CursorClient(_config(emu)) as client:
        result = await client.complete("auto", prompt="count my tokens please, all of them")
    sent = _sent(emu)
    assert result.usage.input_tokens == sent["input_tokens"]
    assert result.usage.cache_read_tokens == sent["cache_read_tokens"]
    assert result.usage.cache_write_tokens == sent["cache_write_tokens"]
    assert result.usage.total_tokens == sent["input_tokens"] + sent["output_tokens"]


async def test_server_chat_and_responses_count_prompt_once(emu: Emulator) -> None:
    app = create_app(_config(emu), emulated=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "usage via chat please"}]},
            )
            assert r.status_code == 200, r.text
            sent = _sent(emu)
            usage = r.json()["usage"]
            assert usage["prompt_tokens"] == sent["input_tokens"]
            assert usage["prompt_tokens_details"] == {"cached_tokens": sent["cache_read_tokens"]}
            assert usage["total_tokens"] == sent["input_tokens"] + sent["output_tokens"]

            r = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "auto",
                    "messages": [{"role": "user", "content": "usage via a stream"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            )
            assert r.status_code == 200
            sent = _sent(emu)
            chunks = [line for line in r.text.splitlines() if line.startswith("data: {")]
            last = httpx.Response(200, content=chunks[-1][6:]).json()
            assert last["usage"]["prompt_tokens"] == sent["input_tokens"]

            r = await http.post("/v1/responses", json={"model": "auto", "input": "usage via responses"})
            assert r.status_code == 200, r.text
            sent = _sent(emu)
            usage = r.json()["usage"]
            assert usage["input_tokens"] == sent["input_tokens"]
            assert usage["input_tokens_details"] == {"cached_tokens": sent["cache_read_tokens"]}
            assert usage["total_tokens"] == sent["input_tokens"] + sent["output_tokens"]


def test_chat_cursor_usage_metadata_counts_prompt_once(emu: Emulator) -> None:
    llm = ChatCursor(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    try:
        result = llm.invoke("usage through langchain")
    finally:
        llm.close()
    sent = _sent(emu)
    meta = result.usage_metadata
    assert meta is not None
    assert meta["input_tokens"] == sent["input_tokens"]
    assert meta["total_tokens"] == sent["input_tokens"] + sent["output_tokens"]
    assert meta.get("input_token_details") == {
        "cache_read": sent["cache_read_tokens"],
        "cache_creation": sent["cache_write_tokens"],
    }


def test_cursor_llm_raw_usage_counts_prompt_once(emu: Emulator) -> None:
    llm = CursorLLM(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    try:
        response = llm.chat([ChatMessage(role=MessageRole.USER, content="usage through llamaindex")])
    finally:
        llm.close()
    sent = _sent(emu)
    usage = response.raw["usage"]
    assert usage["prompt_tokens"] == usage["input_tokens"] == sent["input_tokens"]
    assert usage["cache_read_tokens"] == sent["cache_read_tokens"]
    assert usage["total_tokens"] == sent["input_tokens"] + sent["output_tokens"]
    assert response.additional_kwargs["prompt_tokens"] == sent["input_tokens"]
