"""CursorLLM as ``Settings.llm`` in real LlamaIndex query and chat engines over local documents.

Embeddings come from LlamaIndex's ``MockEmbedding`` (offline); the LLM is CursorLLM over
cursorpipe's MockTransport, whose echo reply proves what reached the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from cursorpipe import CursorClient, MockTransport
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.llms.cursorpipe import CursorLLM

DOCS = [
    Document(text="The lighthouse keeper of Skerry Point is named Morwenna Tregarthen."),
    Document(text="Skerry Point's lighthouse was built in 1871 from local granite."),
]


@pytest.fixture
def mock() -> MockTransport:
    return MockTransport(thinking="Reading the context.")


@pytest.fixture
def settings(mock: MockTransport) -> Iterator[CursorLLM]:
    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    llm = CursorLLM(model="auto", client=CursorClient(transport=mock))
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield llm
    finally:
        Settings._llm, Settings._embed_model = previous_llm, previous_embed


@pytest.fixture
def thread_loop() -> Iterator[None]:
    """A current event loop for sync LlamaIndex code, closed afterwards.

    LlamaIndex's sync paths run coroutines with ``asyncio.get_event_loop()``, which creates a loop
    and leaves it open when the thread has none; its sockets would then be reported (as a
    ResourceWarning) in whichever later test the garbage collector happens to run.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.usefixtures("thread_loop")
def test_query_engine_answers_from_documents(settings: CursorLLM, mock: MockTransport) -> None:
    index = VectorStoreIndex.from_documents(DOCS)
    response = index.as_query_engine(similarity_top_k=2).query("Who keeps the lighthouse?")
    # The mock echoes the last user message: LlamaIndex's QA prompt with the retrieved context.
    assert "Morwenna Tregarthen" in str(response)
    assert "Who keeps the lighthouse?" in str(response)
    assert len(response.source_nodes) == 2
    assert mock.requests, "the query engine must have called Cursor"


async def test_query_engine_async_and_streaming(settings: CursorLLM) -> None:
    index = VectorStoreIndex.from_documents(DOCS)
    answer = await index.as_query_engine().aquery("When was it built?")
    assert "1871" in str(answer)
    streaming = index.as_query_engine(streaming=True)
    response = await streaming.aquery("When was it built?")
    text = "".join([token async for token in response.async_response_gen()])
    assert "1871" in text


@pytest.mark.usefixtures("thread_loop")
def test_chat_engine_keeps_history_and_context(settings: CursorLLM, mock: MockTransport) -> None:
    index = VectorStoreIndex.from_documents(DOCS)
    # ChatMemoryBuffer, not the default Memory: the default's aiosqlite store leaves connections
    # for the garbage collector when driven from sync code (a LlamaIndex matter, not CursorLLM's),
    # which this suite's warnings-as-errors policy would report.
    memory = ChatMemoryBuffer.from_defaults(token_limit=20_000)
    engine = index.as_chat_engine(chat_mode="condense_plus_context", memory=memory)
    first = engine.chat("Who keeps the lighthouse?")
    assert "Who keeps the lighthouse?" in str(first)
    second = engine.chat("And when was it built?")
    assert "And when was it built?" in str(second)
    last = mock.requests[-1]
    roles = [m.role for m in last.messages]
    assert roles[0] == "system"
    assert "Morwenna Tregarthen" in last.messages[0].text  # retrieved context in the system prompt
    assert roles.count("user") >= 2  # the earlier turn travels as history (stateless default)
    streamed = engine.stream_chat("Anything else?")
    assert "Anything else?" in "".join(streamed.response_gen)


@pytest.mark.usefixtures("thread_loop")
def test_token_counting_over_a_query(settings: CursorLLM) -> None:
    counter = TokenCountingHandler()
    previous = Settings._callback_manager
    Settings.callback_manager = CallbackManager([counter])
    try:
        index = VectorStoreIndex.from_documents(DOCS)
        index.as_query_engine().query("Who keeps the lighthouse?")
    finally:
        Settings._callback_manager = previous
    assert counter.prompt_llm_token_count > 10
    assert counter.completion_llm_token_count > 10
