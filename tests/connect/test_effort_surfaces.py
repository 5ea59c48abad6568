"""OpenAI's ``reasoning_effort`` reaches Cursor as the model's effort parameter from every surface:
the server (chat ``reasoning_effort``, responses ``reasoning.effort``), ChatCursor and CursorLLM
(live-dialect.md row 14). The emulator's ``gpt-5.2`` declares ``reasoning`` = low/medium/high."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator
from langchain_cursorpipe import ChatCursor
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cursorpipe import CursorLLM


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


def _requested(emu: Emulator) -> tuple[str, dict[str, str]]:
    req = emu.runs[-1].run_request
    assert req is not None
    return req.requested_model.model_id, {p.id: p.value for p in req.requested_model.parameters}


async def test_server_maps_reasoning_effort(emu: Emulator) -> None:
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    app = create_app(config, emulated=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            user = [{"role": "user", "content": "effort please"}]
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-5.2", "messages": user, "reasoning_effort": "high"},
            )
            assert r.status_code == 200, r.text
            assert "reasoning_effort" not in r.headers.get("x-cursorpipe-ignored-params", "")
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "high"})

            r = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-5.2", "messages": user, "reasoning_effort": "minimal", "stream": True},
            )
            assert r.status_code == 200 and "[DONE]" in r.text
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "low"})  # nearest level the model has

            r = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-5.2", "messages": user, "reasoning_effort": "extreme"},
            )
            assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning_effort"

            r = await http.post(
                "/v1/responses",
                json={
                    "model": "gpt-5.2",
                    "input": "effort",
                    "reasoning": {"effort": "low", "summary": "auto"},
                },
            )
            assert r.status_code == 200, r.text
            assert _requested(emu) == ("gpt-5.2", {"reasoning": "low"})
            assert r.headers.get("x-cursorpipe-ignored-params") == "reasoning.summary"

            r = await http.post(
                "/v1/chat/completions",
                json={"model": "composer-2", "messages": user, "reasoning_effort": "high"},
            )
            assert r.status_code == 200
            assert _requested(emu) == ("composer-2", {"fast": "false"})  # no effort parameter to set


def test_chat_cursor_reasoning_effort(emu: Emulator) -> None:
    llm = ChatCursor(
        model="gpt-5.2",
        reasoning_effort="medium",
        strategy="connect",
        backend_url=emu.url,
        api_key=emu.api_key,
        max_retries=0,
    )
    try:
        llm.invoke("hello")
        assert _requested(emu) == ("gpt-5.2", {"reasoning": "medium"})
        llm.invoke("hello", reasoning_effort="high")
        assert _requested(emu) == ("gpt-5.2", {"reasoning": "high"})
        with llm.with_session() as chat:
            chat.invoke("in a session")
        assert _requested(emu) == ("gpt-5.2", {"reasoning": "medium"})
    finally:
        llm.close()


def test_cursor_llm_reasoning_effort(emu: Emulator) -> None:
    llm = CursorLLM(
        model="gpt-5.2",
        reasoning_effort="high",
        strategy="connect",
        backend_url=emu.url,
        api_key=emu.api_key,
        max_retries=0,
    )
    try:
        llm.chat([ChatMessage(role=MessageRole.USER, content="hello")])
        assert _requested(emu) == ("gpt-5.2", {"reasoning": "high"})
        llm.complete("again", reasoning_effort="low")
        assert _requested(emu) == ("gpt-5.2", {"reasoning": "low"})
    finally:
        llm.close()
