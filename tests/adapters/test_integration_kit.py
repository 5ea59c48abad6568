"""The public integration kit (``cursorpipe.integration``) on its own: a third, minimal adapter built
only from the kit behaves like ChatCursor and CursorLLM do (options, warn-once, sessions, folding),
and the shared helpers keep the rules both adapters relied on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from cursorpipe import (
    ChatMessage,
    ConfigurationError,
    CursorClient,
    CursorSession,
    ImagePart,
    MockTransport,
    ParsedOutput,
    SessionBinding,
    StructuredOutputError,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    TurnEnd,
    TurnRequest,
    Usage,
)
from cursorpipe.integration import (
    AdapterMixin,
    CallOptions,
    EventTranslator,
    extract_json,
    image_part,
    normalize_tool_choice,
    session_prompt,
    sync_stream,
)
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr


class TinyModel(AdapterMixin, BaseModel):
    """The smallest adapter: fields, two private attributes and the kit."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    adapter_label: ClassVar[str] = "TinyModel"
    call_kwargs: ClassVar[frozenset[str]] = frozenset(
        {"model", "max_tokens", "temperature", "response_format"}
    )

    model: str = "auto"
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    reasoning_effort: str | None = None
    strategy: str | None = None
    backend_url: str | None = None
    agent_bin: str | None = None
    api_key: SecretStr | None = None
    client: CursorClient | None = None
    session: CursorSession | None = None

    _binding: SessionBinding[ChatMessage] | None = PrivateAttr(default=None)
    _warned_ignored: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._adapter_post_init()

    async def answer(self, messages: list[ChatMessage], **kwargs: Any) -> str:
        options = self._call_options(kwargs)
        texts = Texts(TurnRequest(model=options.model, messages=tuple(messages)))
        async for event in self._turn_events(messages, options):
            texts.feed(event)
        assert texts.final is not None
        return texts.final


class Texts(EventTranslator[str]):
    """Translates a turn into its text pieces; the final object is the whole answer."""

    __slots__ = ("final",)

    def __init__(self, request: TurnRequest) -> None:
        super().__init__(request)
        self.final: str | None = None

    def on_text(self, text: str) -> str:
        return text

    def on_end(self) -> str:
        self.final = self.acc.text
        return self.final


def user(text: str) -> ChatMessage:
    return ChatMessage.of("user", text)


@pytest.fixture
def mock() -> MockTransport:
    return MockTransport()


@pytest.fixture
def tiny(mock: MockTransport) -> TinyModel:
    return TinyModel(client=CursorClient(transport=mock))


# ------------------------------------------------------------------------------------------------
# AdapterMixin
# ------------------------------------------------------------------------------------------------
async def test_a_stateless_turn_carries_the_options(tiny: TinyModel, mock: MockTransport) -> None:
    assert await tiny.answer([user("hi")], max_tokens=50) == "echo: hi"
    [request] = mock.requests
    assert request.messages == (user("hi"),) and request.max_tokens == 50


async def test_unknown_call_arguments_are_named(tiny: TinyModel) -> None:
    with pytest.raises(ConfigurationError, match=r"TinyModel does not understand .*top_k"):
        await tiny.answer([user("hi")], top_k=3)


def test_ignored_sampling_parameters_warn_once(caplog: pytest.LogCaptureFixture, mock: MockTransport) -> None:
    caplog.set_level(logging.WARNING, logger="cursorpipe.integration")
    model = TinyModel(client=CursorClient(transport=mock), temperature=0.3)
    model._call_options({"temperature": 0.9})
    warned = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert warned == [
        "TinyModel: temperature=0.3 ignored: Cursor's API has no sampling parameters "
        "(temperature, top_p, seed); the model samples as Cursor configures it"
    ]


def test_call_options_merge_the_call_over_the_fields(tiny: TinyModel) -> None:
    tiny.reasoning_effort = "high"
    options = tiny._call_options({"model": "gpt-5", "max_tokens": 7}, stop=["END"])
    assert options == CallOptions(model="gpt-5", max_tokens=7, stop=["END"], reasoning_effort="high")
    assert options.client_kwargs()["timeout_s"] is None and not options.first_tool_only
    assert CallOptions(model="m", tools=[{"type": "function"}], parallel_tool_calls=False).first_tool_only


def test_config_overrides_carry_only_what_is_set() -> None:
    model = TinyModel(strategy="acp", api_key=SecretStr("crsr_x"), max_retries=0, timeout=9.0)
    assert model._config_overrides() == {
        "strategy": "acp",
        "api_key": "crsr_x",
        "max_retries": 0,
        "request_timeout_s": 9.0,
    }
    assert TinyModel()._config_overrides() == {}


async def test_a_session_sends_only_what_cursor_has_not_seen(tiny: TinyModel, mock: MockTransport) -> None:
    async with tiny.with_session() as chat:
        first = await chat.answer([user("one")])
        await chat.answer([user("one"), ChatMessage.of("assistant", first), user("two")])
        assert chat.session_id is not None and tiny.session_id is None
    assert [r.messages for r in mock.requests] == [(user("one"),), (user("two"),)]
    assert len(mock.sessions) == 1 and mock.sessions[0].closed
    assert chat.session_id is None


async def test_a_session_refuses_structured_output(tiny: TinyModel) -> None:
    chat = tiny.with_session()
    with pytest.raises(ConfigurationError, match="session-bound"):
        await chat.answer([user("x")], response_format={"type": "json_object"})


async def test_a_structured_turn_ends_with_the_validated_value(tiny: TinyModel, mock: MockTransport) -> None:
    mock.queue('{"a": 1}')
    options = tiny._call_options({"response_format": {"type": "json_object"}})
    events = [e async for e in tiny._turn_events([user("json please")], options)]
    assert events[-2:] == [ParsedOutput({"a": 1}), events[-1]] and isinstance(events[-1], TurnEnd)


async def test_a_structured_turn_that_stays_invalid_raises(tiny: TinyModel, mock: MockTransport) -> None:
    mock.queue("not json", "still not json")
    options = tiny._call_options({"response_format": {"type": "json_object"}})
    with pytest.raises(StructuredOutputError):
        [e async for e in tiny._turn_events([user("json please")], options)]


async def test_aclose_leaves_an_injected_client_open(tiny: TinyModel, mock: MockTransport) -> None:
    await tiny.answer([user("hi")])
    await tiny.aclose()
    assert not mock.closed


# ------------------------------------------------------------------------------------------------
# EventTranslator
# ------------------------------------------------------------------------------------------------
def test_the_translator_folds_and_skips_notices_and_empty_text() -> None:
    texts = Texts(TurnRequest(model="auto", messages=(user("12345678"),)))
    shown = [
        texts.feed(e)
        for e in (
            TextDelta("quota low", notice=True),
            TextDelta(""),
            TextDelta("hi"),
            ToolCallEvent(ToolCall("c1", "f"), index=0, emulated=True),
            TurnEnd("tool_calls"),
        )
    ]
    assert shown == [None, None, "hi", None, "hi"]
    assert texts.acc.notices == ("quota low",)
    assert texts.finish_reason == "tool_calls" and texts.model_name == "auto" and texts.tools_emulated
    usage = texts.usage()
    assert usage.estimated and usage.input_tokens == 2 and usage.output_tokens == 1


def test_reported_usage_wins_over_the_estimate() -> None:
    texts = Texts(TurnRequest(model="auto", messages=(user("x"),)))
    texts.feed(TurnEnd("stop", Usage(input_tokens=40, output_tokens=3)))
    assert texts.usage() == Usage(input_tokens=40, output_tokens=3)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "required", "expected"),
    [
        (None, False, None),
        (False, False, None),
        (None, True, "required"),
        ("auto", False, "auto"),
        ("none", False, "none"),
        ("required", False, "required"),
        ("any", False, "required"),
        (True, False, "required"),
        ("add", False, {"type": "function", "function": {"name": "add"}}),
        (
            {"type": "function", "function": {"name": "mul"}},
            False,
            {"type": "function", "function": {"name": "mul"}},
        ),
    ],
)
def test_normalize_tool_choice(choice: Any, required: bool, expected: Any) -> None:
    assert normalize_tool_choice(choice, ["add", "mul"], required=required) == expected


def test_true_with_one_tool_forces_it_and_unknown_names_are_errors() -> None:
    assert normalize_tool_choice(True, ["add"]) == {"type": "function", "function": {"name": "add"}}
    with pytest.raises(ConfigurationError, match=r"'sub'.*\(add, mul\)") as caught:
        normalize_tool_choice("sub", ["add", "mul"])
    assert caught.value.code == "invalid_request"


def test_session_prompt() -> None:
    assert session_prompt([user("hi")]) == "hi"
    joined = session_prompt(
        [ChatMessage.of("system", "Be brief."), ChatMessage.of("assistant", "Earlier."), user("Now?")]
    )
    assert joined == "System instructions:\nBe brief.\n\n(Earlier assistant answer: Earlier.)\n\nNow?"
    with pytest.raises(ConfigurationError, match="user message"):
        session_prompt([ChatMessage.of("system", "x")])
    with pytest.raises(ConfigurationError, match="text only"):
        session_prompt([ChatMessage("user", (ImagePart(url="https://example.com/a.png"),))])


def test_image_part_and_extract_json() -> None:
    assert image_part("data:image/jpeg;base64,AAEC") == ImagePart(
        mime_type="image/jpeg", data=b"\x00\x01\x02"
    )
    assert image_part("https://example.com/a.png").url == "https://example.com/a.png"
    with pytest.raises(ConfigurationError):
        image_part("file:///etc/passwd")
    assert extract_json('Here: ```json\n{"a": [1]}\n```') == {"a": [1]}
    with pytest.raises(StructuredOutputError):
        extract_json("no json here")


def test_sync_stream_closes_the_async_stream_when_left_early() -> None:
    state: dict[str, bool] = {}

    async def numbers() -> AsyncIterator[int]:
        try:
            for n in range(100):
                yield n
        finally:
            state["closed"] = True

    seen = []
    for n in sync_stream(numbers):
        seen.append(n)
        if n == 2:
            break
    # The loop's iterator is dropped at the break, and with it the async generator is closed on the
    # bridge loop (CPython closes a dropped generator at once).
    assert seen == [0, 1, 2] and state == {"closed": True}
