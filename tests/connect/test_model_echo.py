"""Model echo (issue 15): every surface reports the model Cursor routed the turn to.

The emulator answers a run for ``auto`` with a ``routed_model`` update naming "Composer 2" (a model
of its catalogue, id ``composer-2``); a run for a named model gets no update. So every surface must
say ``composer-2`` for ``auto`` and keep the requested id otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Behaviour, Emulator
from cursorpipe.types import TextDelta, TransportInfo
from langchain_cursorpipe import ChatCursor
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.cursorpipe import CursorLLM

ROUTED = "composer-2"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


def _config(emu: Emulator, **kw: object) -> CursorPipeConfig:
    return CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0, **kw)


def _routed_sent(emu: Emulator) -> bool:
    run = emu.runs[-1].run_request
    assert run is not None
    return run.requested_model.model_id in ("auto", "default", "")


async def test_client_result_and_events_report_the_routed_model(emu: Emulator) -> None:
    async with CursorClient(_config(emu)) as client:
        result = await client.complete("auto", prompt="which model answers?")
        assert _routed_sent(emu)
        assert result.model == ROUTED
        infos: list[TransportInfo] = []
        first_text_at = None
        async for event in client.events("auto", prompt="stream it"):
            if isinstance(event, TransportInfo):
                infos.append(event)
            elif isinstance(event, TextDelta) and first_text_at is None:
                first_text_at = len(infos)
        # first the requested id, then the routed one, before any text (connect.md §7)
        assert [i.model for i in infos] == ["auto", ROUTED] and first_text_at == 2
        assert {i.transport for i in infos} == {"connect"}
        # a named model gets no routed_model: the requested id stays
        named = await client.complete("composer-2", prompt="named model")
        assert named.model == "composer-2"
        # sessions report it as well
        async with client.session("auto") as session:
            out = await session.prompt("in a session")
        assert out.model == ROUTED


async def test_unknown_routed_name_is_reported_as_sent_and_none_keeps_the_request() -> None:
    with Emulator.start_in_thread(Behaviour(routed_model="Mystery Model 9")) as emu:
        async with CursorClient(_config(emu)) as client:
            result = await client.complete("auto", prompt="who?")
        assert result.model == "Mystery Model 9"  # not in the catalogue: the display name as sent
    with Emulator.start_in_thread(Behaviour(routed_model=None)) as emu:
        async with CursorClient(_config(emu)) as client:
            result = await client.complete("auto", prompt="who?")
        assert result.model == "auto"  # unknown: the requested id


async def test_server_model_field_on_chat_stream_and_responses(emu: Emulator) -> None:
    app = create_app(_config(emu), emulated=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            msgs = [{"role": "user", "content": "model echo"}]
            r = await http.post("/v1/chat/completions", json={"model": "auto", "messages": msgs})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == ROUTED

            r = await http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": msgs, "stream": True}
            )
            assert r.status_code == 200
            chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
            assert chunks and {c["model"] for c in chunks} == {ROUTED}

            r = await http.post("/v1/chat/completions", json={"model": "composer-2", "messages": msgs})
            assert r.json()["model"] == "composer-2"

            r = await http.post("/v1/responses", json={"model": "auto", "input": "model echo"})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == ROUTED

            r = await http.post("/v1/responses", json={"model": "auto", "input": "echo", "stream": True})
            assert r.status_code == 200
            events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
            done = [e for e in events if e["type"] == "response.completed"]
            assert done and done[0]["response"]["model"] == ROUTED

            # response_format goes through the core's complete(): same model field
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": msgs, "response_format": {"type": "json_object"}},
            )
            assert r.status_code == 200, r.text
            assert r.json()["model"] == ROUTED


def test_chat_cursor_model_name(emu: Emulator) -> None:
    llm = ChatCursor(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    try:
        assert llm.invoke("model echo via langchain").response_metadata["model_name"] == ROUTED
        chunks = list(llm.stream("model echo via a langchain stream"))
        last = [c for c in chunks if c.response_metadata.get("model_name")]
        assert last and last[-1].response_metadata["model_name"] == ROUTED
        named = ChatCursor(
            model="composer-2", strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0
        )
        try:
            assert named.invoke("named").response_metadata["model_name"] == "composer-2"
        finally:
            named.close()
    finally:
        llm.close()


def test_cursor_llm_raw_model(emu: Emulator) -> None:
    llm = CursorLLM(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    try:
        response = llm.chat([ChatMessage(role=MessageRole.USER, content="model echo via llamaindex")])
        assert response.raw["model"] == ROUTED
        assert llm.complete("complete echo").raw["model"] == ROUTED
        streamed = list(llm.stream_chat([ChatMessage(role=MessageRole.USER, content="stream echo")]))
        assert streamed[-1].raw["model"] == ROUTED
    finally:
        llm.close()
