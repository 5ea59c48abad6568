"""CursorLLM's LlamaIndex contract, over cursorpipe's MockTransport."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import cursorpipe._client_cache as _clients
import pytest
from cursorpipe import (
    ConfigurationError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    ModelInfo,
    RateLimitError,
    SessionError,
    TextDelta,
    TransportCapabilities,
    TurnEnd,
    Usage,
    UsageEvent,
)
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler, TokenCountingHandler
from llamaindex_cursorpipe import CursorLLM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mock() -> MockTransport:
    return MockTransport(thinking="Pondering.")


@pytest.fixture
def llm(mock: MockTransport) -> CursorLLM:
    return CursorLLM(model="auto", client=CursorClient(transport=mock))


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


# ------------------------------------------------------------------------------------------------
# identity, metadata, imports
# ------------------------------------------------------------------------------------------------
def test_is_a_llamaindex_llm_with_real_metadata() -> None:
    assert BaseLLM in CursorLLM.__mro__
    meta = CursorLLM(model="claude-4.5-sonnet", max_tokens=1000).metadata
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is True
    assert meta.context_window == 200_000
    assert meta.num_output == 1000
    assert meta.model_name == "claude-4.5-sonnet"
    assert CursorLLM(model="gemini-2.5-pro").metadata.context_window == 1_000_000
    assert CursorLLM(model="auto", context_window=50_000).metadata.context_window == 50_000
    assert CursorLLM.class_name() == "CursorLLM"


async def test_model_info_from_cursor_feeds_metadata() -> None:
    models = [ModelInfo(id="house-model", context_window=77_000, max_output_tokens=5_000)]
    llm = CursorLLM(model="house-model", client=CursorClient(transport=MockTransport(models=models)))
    assert llm.metadata.context_window == 128_000  # table default before asking Cursor
    info = await llm.arefresh_model_info()
    assert info is not None and info.id == "house-model"
    assert llm.metadata.context_window == 77_000
    assert llm.metadata.num_output == 5_000


def test_namespace_import_path_and_layout() -> None:
    from llama_index.llms.cursorpipe import CursorLLM as Reexported

    assert Reexported is CursorLLM
    # The code lives at LlamaIndex's conventional path; llamaindex_cursorpipe is a thin alias.
    import llamaindex_cursorpipe

    assert CursorLLM.__module__ == "llama_index.llms.cursorpipe.base"
    assert "alias" in (llamaindex_cursorpipe.__doc__ or "")
    src = ROOT / "packages/llamaindex_cursorpipe/src"
    # Implicit namespace packages: an __init__.py here would hide every other llama_index.llms.*.
    assert not (src / "llama_index/__init__.py").exists()
    assert not (src / "llama_index/llms/__init__.py").exists()
    import llama_index.core  # still importable next to our portion

    assert llama_index.core.__file__ is not None


def test_payload_for_observability_has_no_secret() -> None:
    llm = CursorLLM(api_key="crsr_very_secret")
    assert "crsr_very_secret" not in str(llm.to_payload())
    assert "crsr_very_secret" not in repr(llm)
    assert "crsr_very_secret" not in llm.to_json()


# ------------------------------------------------------------------------------------------------
# chat / complete, sync and async
# ------------------------------------------------------------------------------------------------
def test_chat_returns_text_thinking_and_usage(llm: CursorLLM) -> None:
    response = llm.chat([user("hello")])
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == "echo: hello"
    thinking = [b for b in response.message.blocks if isinstance(b, ThinkingBlock)]
    assert [b.content for b in thinking] == ["Pondering."]
    assert response.raw is not None
    assert response.raw["usage"]["prompt_tokens"] > 0
    assert response.raw["finish_reason"] == "stop"
    assert response.raw["model"] == "auto"
    assert response.additional_kwargs["completion_tokens"] == response.raw["usage"]["completion_tokens"]


async def test_achat_and_acomplete(llm: CursorLLM) -> None:
    response = await llm.achat([ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), user("hi")])
    assert response.message.content == "echo: hi"
    completion = await llm.acomplete("a prompt")
    assert completion.text == "echo: a prompt"
    assert completion.raw["usage"]["total_tokens"] > 0


def test_complete_sync(llm: CursorLLM, mock: MockTransport) -> None:
    assert llm.complete("question").text == "echo: question"
    assert [m.role for m in mock.requests[-1].messages] == ["user"]


def test_stream_chat_carries_cumulative_text_delta_and_thinking(llm: CursorLLM) -> None:
    responses = list(llm.stream_chat([user("one two three")]))
    thinking = [r for r in responses if "thinking_delta" in r.additional_kwargs]
    assert [r.additional_kwargs["thinking_delta"] for r in thinking] == ["Pondering."]
    deltas = [r.delta for r in responses if r.delta]
    assert "".join(deltas) == "echo: one two three"
    assert len(deltas) > 2
    for r in responses:
        assert r.message.content is not None
        assert "echo: one two three".startswith(r.message.content)
    final = responses[-1]
    assert final.message.content == "echo: one two three"
    assert final.raw["usage"]["completion_tokens"] > 0
    assert all(r.raw is None for r in responses[:-1])  # usage exactly once, at the end


async def test_astream_chat_and_astream_complete(llm: CursorLLM) -> None:
    stream = await llm.astream_chat([user("x y")])
    responses = [r async for r in stream]
    assert responses[-1].message.content == "echo: x y"
    completions = [c async for c in await llm.astream_complete("p q")]
    assert "".join(c.delta or "" for c in completions) == "echo: p q"
    assert completions[-1].text == "echo: p q"


def test_stream_complete_sync(llm: CursorLLM) -> None:
    completions = list(llm.stream_complete("r s"))
    assert completions[-1].text == "echo: r s"
    assert completions[-1].raw["usage"]["prompt_tokens"] > 0


def test_estimated_usage_is_flagged(llm: CursorLLM, mock: MockTransport) -> None:
    mock.queue([TextDelta("an answer"), TurnEnd("stop", None)])
    response = llm.chat([user("q")])
    assert response.raw["usage_estimated"] is True
    assert response.additional_kwargs["usage_estimated"] is True
    assert response.raw["usage"]["completion_tokens"] > 0


def test_stop_and_max_tokens_are_enforced(llm: CursorLLM, mock: MockTransport) -> None:
    assert llm.complete("alpha beta gamma", stop=["beta"]).text == "echo: alpha "
    mock.queue(" ".join(["word"] * 100))
    cut = llm.chat([user("long")], max_tokens=4)
    assert cut.raw["finish_reason"] == "length"
    assert len(cut.message.content or "") < 40


def test_per_call_model_and_temperature(llm: CursorLLM, mock: MockTransport) -> None:
    response = llm.chat([user("hi")], model="mock-fast", temperature=0.7)
    assert mock.requests[-1].model == "mock-fast"
    assert mock.requests[-1].temperature == 0.7
    assert response.raw["model"] == "mock-fast"


def test_messages_translate_roles_and_images() -> None:
    mock = MockTransport(capabilities=TransportCapabilities(images=True, native_tools=True))
    llm = CursorLLM(client=CursorClient(transport=mock))
    png = b"\x89PNG\r\n\x1a\n fake"
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.ASSISTANT, content="Earlier answer."),
        ChatMessage(role=MessageRole.TOOL, content="42", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(
            role=MessageRole.USER,
            blocks=[
                TextBlock(text="Look:"),
                ImageBlock(image=base64.b64encode(png), image_mimetype="image/png"),
                ImageBlock(url="https://example.com/cat.png"),
            ],
        ),
    ]
    llm.chat(messages)
    sent = mock.requests[-1].messages
    assert [m.role for m in sent] == ["system", "assistant", "tool", "user"]
    assert sent[2].tool_call_id == "c1"
    assert sent[3].text == "Look:"
    assert sent[3].images[0].data == png
    assert sent[3].images[1].url == "https://example.com/cat.png"


def test_bad_input_gives_typed_errors(llm: CursorLLM, mock: MockTransport) -> None:
    with pytest.raises(ConfigurationError, match="top_k"):
        llm.chat([user("hi")], top_k=3)

    audio = ChatMessage(role=MessageRole.USER, blocks=[AudioBlock(audio=b"RIFF", format="wav")])
    with pytest.raises(ConfigurationError, match=r"messages\[0\]\.blocks\[0\]"):
        llm.chat([audio])
    assert mock.requests == []


def test_cursor_errors_propagate(llm: CursorLLM, mock: MockTransport) -> None:
    mock.queue(RateLimitError("slow down", retry_after=999))
    with pytest.raises(RateLimitError):
        llm.complete("hi")


def test_breaking_out_of_a_stream_cancels_the_run(llm: CursorLLM, mock: MockTransport) -> None:
    stream = llm.stream_chat([user("a b c d e f g h")])
    for response in stream:
        if response.delta:
            break
    stream.close()
    assert mock.cancelled == 1
    assert mock.running == 0


# ------------------------------------------------------------------------------------------------
# callbacks and token counting
# ------------------------------------------------------------------------------------------------
def test_token_counting_handler_sees_real_usage(mock: MockTransport) -> None:
    counter = TokenCountingHandler()
    llm = CursorLLM(client=CursorClient(transport=mock), callback_manager=CallbackManager([counter]))
    usage = Usage(input_tokens=321, output_tokens=12)
    mock.queue([TextDelta("ok"), UsageEvent(usage), TurnEnd("stop", usage)])
    llm.chat([user("count me")])
    assert counter.prompt_llm_token_count == 321
    assert counter.completion_llm_token_count == 12
    mock.queue([TextDelta("ok"), UsageEvent(usage), TurnEnd("stop", usage)])
    list(llm.stream_chat([user("count me too")]))
    assert counter.prompt_llm_token_count == 642
    mock.queue([TextDelta("ok"), UsageEvent(usage), TurnEnd("stop", usage)])
    llm.complete("and me")
    assert counter.completion_llm_token_count == 36


async def test_callbacks_fire_for_every_method(mock: MockTransport) -> None:
    debug = LlamaDebugHandler()
    llm = CursorLLM(client=CursorClient(transport=mock), callback_manager=CallbackManager([debug]))
    await llm.achat([user("1")])
    [r async for r in await llm.astream_chat([user("2")])]
    await llm.acomplete("3")
    [r async for r in await llm.astream_complete("4")]
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 4


def test_sync_callbacks_fire(mock: MockTransport) -> None:
    debug = LlamaDebugHandler()
    llm = CursorLLM(client=CursorClient(transport=mock), callback_manager=CallbackManager([debug]))
    llm.chat([user("1")])
    list(llm.stream_chat([user("2")]))
    llm.complete("3")
    list(llm.stream_complete("4"))
    assert len(debug.get_event_pairs(CBEventType.LLM)) == 4


# ------------------------------------------------------------------------------------------------
# sessions
# ------------------------------------------------------------------------------------------------
async def test_async_session_sends_only_new_messages(llm: CursorLLM, mock: MockTransport) -> None:
    async with llm.with_session() as chat:
        first = await chat.achat([user("My name is Ada.")])
        history = [user("My name is Ada."), first.message, user("What is my name?")]
        second = await chat.achat(history)
        streamed = [r async for r in await chat.astream_chat([user("Once more")])]
        session_id = chat.session_id
        assert session_id is not None
    assert second.message.content == "echo: What is my name?"
    assert streamed[-1].message.content == "echo: Once more"
    assert [[m.text for m in r.messages] for r in mock.requests] == [
        ["My name is Ada."],
        ["What is my name?"],
        ["Once more"],
    ]
    assert mock.sessions[0].closed
    assert second.raw["session_id"] == session_id


def test_sync_session(llm: CursorLLM, mock: MockTransport) -> None:
    with llm.with_session() as chat:
        chat.complete("first")
        assert chat.complete("second").text == "echo: second"
    assert len(mock.sessions) == 1 and mock.sessions[0].closed
    assert llm.session_id is None


def test_session_loop_mismatch_is_explicit(llm: CursorLLM) -> None:
    chat = llm.with_session()
    chat.complete("sync")
    with pytest.raises(SessionError, match="lives on the event loop"):
        asyncio.run(chat.acomplete("async"))
    chat.end_session()


# ------------------------------------------------------------------------------------------------
# clients built from fields
# ------------------------------------------------------------------------------------------------
def test_client_built_from_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[CursorPipeConfig] = []

    def fake_client(config: CursorPipeConfig) -> CursorClient:
        built.append(config)
        return CursorClient(config, transport=MockTransport())

    monkeypatch.setattr(_clients, "CursorClient", fake_client)
    llm = CursorLLM(api_key="crsr_x", strategy="acp", agent_bin="/bin/agent", max_retries=1, timeout=9)
    assert llm.complete("a").text == "echo: a"
    assert llm.complete("b").text == "echo: b"
    assert len(built) == 1
    assert built[0].strategy == "acp"
    assert built[0].agent_bin == "/bin/agent"
    assert built[0].api_key.get_secret_value() == "crsr_x"
    assert built[0].max_retries == 1
    assert built[0].request_timeout_s == 9
    llm.close()


def test_a_loops_client_is_closed_with_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    transports: list[MockTransport] = []

    def fake_client(config: CursorPipeConfig) -> CursorClient:
        transports.append(MockTransport())
        return CursorClient(config, transport=transports[-1])

    monkeypatch.setattr(_clients, "CursorClient", fake_client)
    llm = CursorLLM(strategy="connect")
    assert asyncio.run(llm.acomplete("one")).text == "echo: one"
    assert len(transports) == 1 and transports[0].closed
