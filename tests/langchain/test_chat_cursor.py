"""ChatCursor behaviour beyond the standard suites, over cursorpipe's MockTransport."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import cursorpipe._client_cache as _clients
import pytest
from cursorpipe import (
    ConfigurationError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    RateLimitError,
    SessionError,
    TextDelta,
    TransportCapabilities,
    TurnEnd,
    Usage,
    UsageEvent,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_cursorpipe import ChatCursor


@pytest.fixture
def mock() -> MockTransport:
    return MockTransport(thinking="Thinking it over.")


@pytest.fixture
def llm(mock: MockTransport) -> ChatCursor:
    return ChatCursor(model="auto", client=CursorClient(transport=mock))


def _usage_chunks(chunks: list[AIMessageChunk]) -> list[AIMessageChunk]:
    return [c for c in chunks if c.usage_metadata]


# ------------------------------------------------------------------------------------------------
# invoke / stream results
# ------------------------------------------------------------------------------------------------
def test_invoke_returns_text_metadata_usage_and_reasoning(llm: ChatCursor) -> None:
    result = llm.invoke("hello there")
    assert result.content == "echo: hello there"
    assert result.additional_kwargs["reasoning_content"] == "Thinking it over."
    assert result.response_metadata["model_name"] == "auto"
    assert result.response_metadata["finish_reason"] == "stop"
    assert result.response_metadata["model_provider"] == "cursor"
    assert "usage_estimated" not in result.response_metadata
    assert result.usage_metadata is not None
    assert result.usage_metadata["total_tokens"] == (
        result.usage_metadata["input_tokens"] + result.usage_metadata["output_tokens"]
    )
    assert result.usage_metadata["output_tokens"] > 0


def test_real_usage_counts_are_passed_through(llm: ChatCursor, mock: MockTransport) -> None:
    usage = Usage(input_tokens=123, output_tokens=45, cache_read_tokens=100, reasoning_tokens=7)
    mock.queue([TextDelta("fine"), UsageEvent(usage), TurnEnd("stop", usage)])
    result = llm.invoke("how are you")
    assert result.usage_metadata == {
        "input_tokens": 123,
        "output_tokens": 45,
        "total_tokens": 168,
        "input_token_details": {"cache_read": 100, "cache_creation": 0},
        "output_token_details": {"reasoning": 7},
    }
    assert "usage_estimated" not in result.response_metadata


def test_missing_usage_is_estimated_and_flagged(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue([TextDelta("a reply of some length"), TurnEnd("stop", None)])
    result = llm.invoke("question")
    assert result.response_metadata["usage_estimated"] is True
    assert result.usage_metadata is not None
    assert result.usage_metadata["output_tokens"] > 0
    assert result.usage_metadata["input_tokens"] > 0


def test_stream_yields_deltas_thinking_and_one_final_usage_chunk(llm: ChatCursor) -> None:
    chunks = list(llm.stream("one two three"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[0].additional_kwargs == {"reasoning_content": "Thinking it over."}
    assert "".join(str(c.content) for c in chunks) == "echo: one two three"
    assert len([c for c in chunks if c.content]) > 2  # really streamed, word by word
    assert _usage_chunks(chunks) == [chunks[-1]]
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["model_provider"] == "cursor"
    assert sum(1 for c in chunks if c.response_metadata.get("model_name")) == 1


async def test_astream_matches_stream(llm: ChatCursor) -> None:
    chunks = [c async for c in llm.astream("four five")]
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.content == "echo: four five"
    assert full.additional_kwargs["reasoning_content"] == "Thinking it over."
    assert full.usage_metadata is not None and full.usage_metadata["input_tokens"] > 0
    assert chunks[-1].chunk_position == "last"


def test_reasoning_becomes_a_v1_reasoning_block(mock: MockTransport) -> None:
    llm = ChatCursor(client=CursorClient(transport=mock), output_version="v1")
    result = llm.invoke("hi")
    kinds = [b["type"] for b in result.content_blocks]
    assert "reasoning" in kinds
    assert "text" in kinds


def test_finish_reason_length_when_max_tokens_cuts(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue(" ".join(["word"] * 200))
    result = llm.invoke("talk a lot", max_tokens=5)
    assert result.response_metadata["finish_reason"] == "length"
    assert len(str(result.content)) < 60


# ------------------------------------------------------------------------------------------------
# stop, per-call options, validation
# ------------------------------------------------------------------------------------------------
def test_call_stop_is_enforced(llm: ChatCursor) -> None:
    result = llm.invoke("alpha beta gamma", stop=["beta"])
    assert result.content == "echo: alpha "
    assert result.response_metadata["finish_reason"] == "stop"


def test_constructor_stop_is_enforced_and_call_stop_replaces_it(mock: MockTransport) -> None:
    llm = ChatCursor(client=CursorClient(transport=mock), stop=["gamma"])
    assert llm.invoke("alpha beta gamma delta").content == "echo: alpha beta "
    assert llm.invoke("alpha beta gamma delta", stop=["alpha"]).content == "echo: "
    streamed = "".join(str(c.content) for c in llm.stream("alpha beta gamma delta"))
    assert streamed == "echo: alpha beta "


def test_per_call_model_reaches_cursor_and_metadata(llm: ChatCursor, mock: MockTransport) -> None:
    result = llm.invoke("hi", model="mock-fast")
    assert mock.requests[-1].model == "mock-fast"
    assert result.response_metadata["model_name"] == "mock-fast"
    bound = llm.bind(model="mock-thinking")
    bound.invoke("hi")
    assert mock.requests[-1].model == "mock-thinking"


def test_temperature_and_timeout_reach_the_request(mock: MockTransport) -> None:
    llm = ChatCursor(client=CursorClient(transport=mock), temperature=0.3, timeout=12)
    llm.invoke("hi")
    assert mock.requests[-1].temperature == 0.3
    assert mock.requests[-1].timeout_s == 12
    llm.invoke("hi", temperature=0.9, timeout=5)
    assert mock.requests[-1].temperature == 0.9
    assert mock.requests[-1].timeout_s == 5


def test_ls_params_honour_per_call_model() -> None:
    llm = ChatCursor(model="auto", temperature=0.5, max_tokens=10, stop=["x"])
    params = llm._get_ls_params(model="claude-4.5-sonnet")
    assert params["ls_provider"] == "cursor"
    assert params["ls_model_name"] == "claude-4.5-sonnet"
    assert params["ls_model_type"] == "chat"
    assert params["ls_temperature"] == 0.5
    assert params["ls_max_tokens"] == 10
    assert params["ls_stop"] == ["x"]
    assert llm._get_ls_params()["ls_model_name"] == "auto"


def test_unknown_call_argument_is_a_typed_error(llm: ChatCursor) -> None:
    with pytest.raises(ConfigurationError, match="frequency_penalty"):
        llm.invoke("hi", frequency_penalty=1)


def test_unsupported_content_block_is_a_typed_error(llm: ChatCursor, mock: MockTransport) -> None:
    message = HumanMessage(content=[{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])
    with pytest.raises(ConfigurationError, match=r"messages\[0\]\.content\[0\]"):
        llm.invoke([message])
    assert mock.requests == []


def test_api_key_is_secret_and_standard_aliases_work() -> None:
    llm = ChatCursor(
        model_name="auto", api_key="crsr_secret_value", request_timeout=3, max_completion_tokens=9
    )
    assert "crsr_secret_value" not in repr(llm)
    assert "crsr_secret_value" not in str(llm.model_dump())
    assert llm.timeout == 3
    assert llm.max_tokens == 9
    assert llm.lc_secrets == {"api_key": "CURSOR_API_KEY"}
    assert llm._llm_type == "cursor-chat"
    assert llm._identifying_params["model"] == "auto"


# ------------------------------------------------------------------------------------------------
# message translation
# ------------------------------------------------------------------------------------------------
def test_stateless_calls_send_the_whole_conversation() -> None:
    # A transport with a native tool channel, so the core sends tool traffic as messages (it
    # renders it as text for transports that need tool emulation).
    mock = MockTransport(capabilities=TransportCapabilities(images=True, native_tools=True))
    llm = ChatCursor(client=CursorClient(transport=mock))
    png = base64.b64encode(b"\x89PNG fake").decode()
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Hi, I am Ada.", name="ada"),
        AIMessage("Hello Ada.", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "c1"}]),
        ToolMessage("result", tool_call_id="c1"),
        HumanMessage(
            content=[
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image", "base64": png, "mime_type": "image/png"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]
        ),
    ]
    llm.invoke(messages)
    sent = mock.requests[-1].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[0].text == "Be brief."
    assert sent[1].name == "ada"
    assert sent[2].tool_calls[0].name == "lookup"
    assert sent[2].tool_calls[0].parsed_arguments() == {"q": "x"}
    assert sent[3].tool_call_id == "c1"
    assert sent[4].text == "What is in this picture?"
    assert sent[4].images[0].data == b"\x89PNG fake"
    assert sent[4].images[1].url == "https://example.com/a.png"


# ------------------------------------------------------------------------------------------------
# LangChain surfaces: LCEL, batch, events, callbacks
# ------------------------------------------------------------------------------------------------
def test_lcel_chain_sync_and_stream(llm: ChatCursor) -> None:
    chain = ChatPromptTemplate.from_messages([("system", "Be terse."), ("human", "Say {word}")]) | llm
    chain = chain | StrOutputParser()
    assert chain.invoke({"word": "cheese"}) == "echo: Say cheese"
    assert "".join(chain.stream({"word": "cheese"})) == "echo: Say cheese"


async def test_lcel_chain_async(llm: ChatCursor) -> None:
    chain = ChatPromptTemplate.from_template("Say {word}") | llm | StrOutputParser()
    assert await chain.ainvoke({"word": "tea"}) == "echo: Say tea"
    assert "".join([c async for c in chain.astream({"word": "tea"})]) == "echo: Say tea"
    assert await chain.abatch([{"word": "a"}, {"word": "b"}]) == ["echo: Say a", "echo: Say b"]


def test_batch_keeps_inputs_apart(llm: ChatCursor) -> None:
    results = llm.batch([f"question {i}" for i in range(6)])
    assert [r.content for r in results] == [f"echo: question {i}" for i in range(6)]


async def test_astream_events_reports_stream_tokens(llm: ChatCursor) -> None:
    tokens = [
        event["data"]["chunk"].content
        async for event in llm.astream_events("x y z", version="v2")
        if event["event"] == "on_chat_model_stream"
    ]
    assert "".join(str(t) for t in tokens) == "echo: x y z"


def test_streaming_true_fires_token_callbacks_on_invoke(mock: MockTransport) -> None:
    seen: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            seen.append(token)

    llm = ChatCursor(client=CursorClient(transport=mock), streaming=True)
    result = llm.invoke("p q", config={"callbacks": [Collect()]})
    assert result.content == "echo: p q"
    assert "".join(seen) == "echo: p q"
    assert len([t for t in seen if t]) >= 2


async def test_streaming_true_fires_each_token_once_on_ainvoke(mock: MockTransport) -> None:
    seen: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            seen.append(token)

    llm = ChatCursor(client=CursorClient(transport=mock), streaming=True)
    result = await llm.ainvoke("p q", config={"callbacks": [Collect()]})
    assert result.content == "echo: p q"
    assert "".join(seen) == "echo: p q"  # each token once, not once per layer


# ------------------------------------------------------------------------------------------------
# errors and cancellation
# ------------------------------------------------------------------------------------------------
def test_cursor_errors_surface_unchanged_sync(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue(RateLimitError("slow down", retry_after=999))
    with pytest.raises(RateLimitError, match="slow down"):
        llm.invoke("hi")


async def test_cursor_errors_surface_unchanged_async(llm: ChatCursor, mock: MockTransport) -> None:
    mock.queue(RateLimitError("slow down", retry_after=999))
    with pytest.raises(RateLimitError):
        await llm.ainvoke("hi")


def test_leaving_a_stream_early_cancels_the_cursor_run(llm: ChatCursor, mock: MockTransport) -> None:
    stream = llm.stream("one two three four five six")
    for chunk in stream:
        if chunk.content:
            break
    stream.close()
    assert mock.cancelled == 1
    assert mock.running == 0


async def test_cancelling_ainvoke_cancels_the_cursor_run(mock: MockTransport) -> None:
    mock.delay_s = 0.05
    llm = ChatCursor(client=CursorClient(transport=mock))
    task = asyncio.create_task(llm.ainvoke("a b c d e f g h i j"))
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert mock.cancelled == 1
    assert mock.running == 0


# ------------------------------------------------------------------------------------------------
# sessions
# ------------------------------------------------------------------------------------------------
async def test_async_session_sends_only_new_messages(llm: ChatCursor, mock: MockTransport) -> None:
    async with llm.with_session() as chat:
        assert chat.session_id is None
        first = await chat.ainvoke("My name is Ada.")
        session_id = chat.session_id
        assert session_id is not None
        # The whole history again plus one new message: only the new one travels.
        second = await chat.ainvoke([HumanMessage("My name is Ada."), first, HumanMessage("My name?")])
        # Only the new message is fine as well.
        third = await chat.ainvoke("And again?")
        assert chat.session_id == session_id
    assert [r.content for r in (first, second, third)] == [
        "echo: My name is Ada.",
        "echo: My name?",
        "echo: And again?",
    ]
    assert [[m.text for m in r.messages] for r in mock.requests] == [
        ["My name is Ada."],
        ["My name?"],
        ["And again?"],
    ]
    session = mock.sessions[-1]
    assert [m.text for m in session.history if m.role == "user"] == [
        "My name is Ada.",
        "My name?",
        "And again?",
    ]
    assert session.closed
    assert second.response_metadata["session_id"] == session_id


def test_sync_session_streams_and_is_discarded(llm: ChatCursor, mock: MockTransport) -> None:
    with llm.with_session() as chat:
        chat.invoke([SystemMessage("Be brief."), HumanMessage("Hello")])
        streamed = "".join(str(c.content) for c in chat.stream("Next"))
    assert streamed == "echo: Next"
    assert len(mock.sessions) == 1
    assert mock.sessions[0].closed
    first_text = mock.requests[0].messages[0].text
    assert "Be brief." in first_text and "Hello" in first_text
    assert llm.session_id is None  # the original model stays stateless


def test_session_rejects_a_repeated_conversation(llm: ChatCursor) -> None:
    with llm.with_session() as chat:
        reply = chat.invoke("Hi")
        with pytest.raises(ConfigurationError, match="no new message"):
            chat.invoke([HumanMessage("Hi"), reply])


def test_session_bound_model_is_loop_affine(llm: ChatCursor) -> None:
    chat = llm.with_session()
    chat.invoke("sync first")
    with pytest.raises(SessionError, match="lives on the event loop"):
        asyncio.run(chat.ainvoke("then async"))
    chat.end_session()


async def test_existing_cursor_session_can_be_bound(mock: MockTransport) -> None:
    client = CursorClient(transport=mock)
    async with client.session("mock-fast") as session:
        chat = ChatCursor(client=client, session=session)
        await chat.ainvoke("one")
        await chat.ainvoke("two")
        assert session.turn_count == 2
        assert chat.session_id == session.session_id
    assert mock.sessions[0].closed


# ------------------------------------------------------------------------------------------------
# clients, config and token counting
# ------------------------------------------------------------------------------------------------
def test_clients_are_built_from_fields_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[CursorPipeConfig] = []

    def fake_client(config: CursorPipeConfig) -> CursorClient:
        built.append(config)
        return CursorClient(config, transport=MockTransport())

    monkeypatch.setattr(_clients, "CursorClient", fake_client)
    llm = ChatCursor(
        api_key="crsr_test",
        strategy="connect",
        backend_url="http://127.0.0.1:9",
        max_retries=0,
        timeout=7,
        agent_bin="/opt/agent",
    )
    assert llm.invoke("a").content == "echo: a"
    assert llm.invoke("b").content == "echo: b"
    assert len(built) == 1  # sync calls share the bridge loop's client
    config = built[0]
    assert config.strategy == "connect"
    assert config.backend_url == "http://127.0.0.1:9"
    assert config.api_key.get_secret_value() == "crsr_test"
    assert config.max_retries == 0
    assert config.request_timeout_s == 7
    assert config.agent_bin == "/opt/agent"

    async def run_async() -> str:
        result = await llm.ainvoke("c")
        await llm.aclose()
        return str(result.content)

    assert asyncio.run(run_async()) == "echo: c"
    assert len(built) == 2  # a new loop gets its own client
    llm.close()


def test_a_loops_client_is_closed_with_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    transports: list[MockTransport] = []

    def fake_client(config: CursorPipeConfig) -> CursorClient:
        transports.append(MockTransport())
        return CursorClient(config, transport=transports[-1])

    monkeypatch.setattr(_clients, "CursorClient", fake_client)
    llm = ChatCursor(strategy="connect")

    async def twice() -> None:
        await llm.ainvoke("one")
        await llm.ainvoke("two")

    asyncio.run(twice())  # no aclose(): asyncio.run's shutdown closes the loop's client
    assert len(transports) == 1
    assert transports[0].closed
    asyncio.run(twice())
    assert len(transports) == 2 and transports[1].closed


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"strategy": "carrier-pigeon"}, "strategy"),
        ({"timeout": -1}, "timeout"),
        ({"request_timeout": 0}, "timeout"),
        ({"max_retries": -2}, "max_retries"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(
    kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"argument {argument} ") as caught:
        ChatCursor(**kwargs)
    assert caught.value.details["argument"] == argument
    assert "CURSORPIPE_" not in caught.value.message
    assert ChatCursor(strategy=" Connect ").strategy == "connect"


def test_token_counting_is_offline_and_deterministic() -> None:
    llm = ChatCursor()
    text = "The quick brown fox jumps over the lazy dog. " * 10
    assert llm.get_token_ids(text) == llm.get_token_ids(text)
    count = llm.get_num_tokens(text)
    assert len(text) / 6 < count < len(text) / 2
    messages = [SystemMessage("Be brief."), HumanMessage(text)]
    assert llm.get_num_tokens_from_messages(messages) > count


def test_profile_describes_the_model() -> None:
    profile = ChatCursor(model="claude-4.5-sonnet").profile
    assert profile is not None
    assert profile["max_input_tokens"] == 200_000
    assert profile["tool_calling"] is True and profile["structured_output"] is True
    unknown = ChatCursor(model="something-new").profile
    assert unknown is not None and unknown["max_input_tokens"] > 0
