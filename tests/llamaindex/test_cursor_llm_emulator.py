"""CursorLLM end to end against the Cursor API emulator (connect transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cursorpipe.testing.emulator import DEFAULT_THINKING, Emulator, expected_reply
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ThinkingBlock
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.llms.cursorpipe import CursorLLM


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


@pytest.fixture
def llm(emulator: Emulator) -> Iterator[CursorLLM]:
    llm = CursorLLM(strategy="connect", backend_url=emulator.url, api_key=emulator.api_key, max_retries=0)
    yield llm
    llm.close()  # the sync bridge loop's client


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def test_chat_and_stream(llm: CursorLLM) -> None:
    response = llm.chat([user("hello")])
    assert response.message.content == expected_reply("hello")
    assert [b.content for b in response.message.blocks if isinstance(b, ThinkingBlock)] == [DEFAULT_THINKING]
    assert response.raw["usage_estimated"] is False
    streamed = list(llm.stream_complete("stream me"))
    assert "".join(r.delta or "" for r in streamed) == expected_reply("stream me")


def test_token_counting_uses_cursor_counts(emulator: Emulator) -> None:
    counter = TokenCountingHandler()
    llm = CursorLLM(
        strategy="connect",
        backend_url=emulator.url,
        api_key=emulator.api_key,
        callback_manager=CallbackManager([counter]),
    )
    try:
        response = llm.chat([user("count")])
    finally:
        llm.close()
    assert counter.prompt_llm_token_count == response.raw["usage"]["prompt_tokens"] > 0
    assert counter.completion_llm_token_count == response.raw["usage"]["completion_tokens"] > 0


def test_session_and_stateless_history(llm: CursorLLM) -> None:
    first = llm.chat([user("I am Ada.")])
    stateless = llm.chat([user("I am Ada."), first.message, user("Who am I?")])
    assert stateless.message.content == expected_reply("Who am I?", earlier=2, first="I am Ada.")
    with llm.with_session() as chat:
        chat.chat([user("I am Ada.")])
        assert chat.complete("Who am I?").text == expected_reply(
            "Who am I?", earlier=2, first="I am Ada.", turns=1
        )


async def test_async_session(emulator: Emulator) -> None:
    llm = CursorLLM(strategy="connect", backend_url=emulator.url, api_key=emulator.api_key)
    try:
        async with llm.with_session() as chat:
            await chat.acomplete("one")
            stream = await chat.astream_chat([user("two")])
            responses = [r async for r in stream]
        assert responses[-1].message.content == expected_reply("two", earlier=2, first="one", turns=1)
    finally:
        await llm.aclose()  # this test's loop ends with the test: close its client here


def test_query_engine_over_documents(llm: CursorLLM) -> None:
    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    loop = asyncio.new_event_loop()  # LlamaIndex's sync paths want a current loop (see test_engines)
    asyncio.set_event_loop(loop)
    try:
        Settings.llm = llm
        Settings.embed_model = MockEmbedding(embed_dim=8)
        index = VectorStoreIndex.from_documents([Document(text="The secret ingredient is cardamom.")])
        answer = str(index.as_query_engine().query("What is the secret ingredient?"))
    finally:
        Settings._llm, Settings._embed_model = previous_llm, previous_embed
        asyncio.set_event_loop(None)
        loop.close()
    assert answer.startswith("Emulated reply to:")
    assert "cardamom" in answer
