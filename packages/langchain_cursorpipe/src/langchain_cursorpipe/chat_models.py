"""``ChatCursor``: a LangChain chat model for the models of a Cursor subscription.

A thin adapter (design.md lesson 12): LangChain messages go to ``cursorpipe.CursorClient.events``
and the typed events that come back become ``AIMessageChunk`` objects. The async methods are
native; the sync ones run the same async code on ``cursorpipe.SyncBridge`` (design.md lesson 4).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from cursorpipe import (
    ConfigurationError,
    CursorClient,
    CursorSession,
    Event,
    SessionBinding,
    SessionError,
    Strategy,
    StructuredOutputError,
    SyncBridge,
    TextDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    client_for_loop,
    close_clients,
    model_facts,
)
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput, ModelProfile
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
)
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from ._convert import PROVIDER, ChunkBuilder, message_text, to_cursor_messages
from ._structured import (
    StructuredMethod,
    is_pydantic_schema,
    normalize_tool_choice,
    response_format_for,
    structured_parser,
)
from ._tokens import count_tokens, token_ids

__all__ = ["ChatCursor"]

log = logging.getLogger("langchain_cursorpipe")

#: Told to the model when the caller asked for ``parallel_tool_calls=False`` (Cursor's protocol
#: has no such switch, connect.md §6.1); calls beyond the first are also dropped on the way back.
_ONE_TOOL_CALL = (
    "Call at most one tool in this answer. If more tools are needed, call the first one only and "
    "wait for its result."
)
#: Sampling parameters OpenAI-style callers set that no Cursor transport has.
_IGNORED_SAMPLING = ("temperature", "top_p", "seed")

# Per-call keyword arguments ChatCursor understands; anything else is a caller mistake.
_CALL_KWARGS = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "timeout",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "stream",
        "top_p",
        "seed",
    }
)
# Per-message overhead of the offline token estimate (role markers and separators).
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_CONVERSATION = 3


@dataclass(frozen=True, slots=True)
class _CallOptions:
    model: str
    temperature: float | None
    max_tokens: int | None
    timeout: float | None
    stop: list[str] | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | None
    parallel_tool_calls: bool = True
    reasoning_effort: str | None = None


def _message_key(message: BaseMessage) -> tuple[str, str]:
    return (message.type, message_text(message))


def _session_binding(
    session: CursorSession | None = None, *, owned: bool = True
) -> SessionBinding[BaseMessage]:
    """The Cursor conversation a session-bound ``ChatCursor`` talks to (see ``with_session``)."""
    return SessionBinding(_message_key, label="ChatCursor", reply_role="ai", session=session, owned=owned)


def _session_text(messages: Sequence[BaseMessage]) -> str:
    """The new messages of a session turn as the one user message a Cursor session takes."""
    if not any(isinstance(m, HumanMessage) for m in messages):
        raise ConfigurationError(
            "a session turn needs at least one new human message", code="invalid_request"
        )
    for i, m in enumerate(messages):
        if isinstance(m, HumanMessage) and not isinstance(m.content, str):
            kinds = {b.get("type") if isinstance(b, dict) else "text" for b in m.content}
            if kinds - {"text"}:
                raise ConfigurationError(
                    f"messages[{i}]: session turns carry text only; send images in a stateless call",
                    code="invalid_request",
                )
    if len(messages) == 1:
        return message_text(messages[0])
    parts: list[str] = []
    for m in messages:
        text = message_text(m)
        if isinstance(m, SystemMessage):
            parts.append(f"System instructions:\n{text}")
        elif isinstance(m, HumanMessage):
            parts.append(text)
        elif isinstance(m, AIMessage):
            parts.append(f"(Earlier assistant answer: {text})")
        else:
            parts.append(f"({m.type} message: {text})")
    return "\n\n".join(parts)


def _tool_calls_from_chunks(chunks: list[ToolCallChunk]) -> AIMessageChunk:
    merged: dict[int, ToolCallChunk] = {}
    for chunk in chunks:
        index = chunk.get("index") or 0
        have = merged.get(index)
        if have is None:
            merged[index] = ToolCallChunk(
                name=chunk.get("name"), args=chunk.get("args") or "", id=chunk.get("id"), index=index
            )
        else:
            have["args"] = (have.get("args") or "") + (chunk.get("args") or "")
            have["name"] = have.get("name") or chunk.get("name")
            have["id"] = have.get("id") or chunk.get("id")
    # A chunk marked last parses its tool_call_chunks into tool_calls / invalid_tool_calls.
    return AIMessageChunk(content="", tool_call_chunks=list(merged.values()), chunk_position="last")


def _split_invalid(
    tools: AIMessageChunk, errors: Mapping[int, str] | None
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """Tool calls and invalid tool calls, moving calls the core flagged (``ToolCallEvent.error``,
    by index) into the invalid list with the core's reason."""
    invalid = list(tools.invalid_tool_calls)
    if not errors:
        return list(tools.tool_calls), invalid
    flagged = {
        chunk.get("id"): errors[chunk.get("index") or 0]
        for chunk in tools.tool_call_chunks
        if (chunk.get("index") or 0) in errors
    }
    calls: list[ToolCall] = []
    for call in tools.tool_calls:
        reason = flagged.get(call.get("id"))
        if reason is None:
            calls.append(call)
        else:
            invalid.append(
                InvalidToolCall(
                    type="invalid_tool_call",
                    name=call["name"],
                    args=json.dumps(call["args"]),
                    id=call.get("id"),
                    error=reason,
                )
            )
    for bad in invalid:
        for chunk in tools.tool_call_chunks:
            if chunk.get("id") == bad.get("id") and (chunk.get("index") or 0) in errors:
                bad["error"] = errors[chunk.get("index") or 0]
    return calls, invalid


def _bad_argument(name: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"ChatCursor argument {name} {problem}", code="invalid_argument", details={"argument": name}
    )


def _our_error(exc: ValidationError) -> ConfigurationError | None:
    """The ConfigurationError one of ChatCursor's own checks raised inside pydantic's validation."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigurationError):
            return cause
    return None


def _reasoning_only(chunk: AIMessageChunk) -> bool:
    return (
        chunk.content == ""
        and "reasoning_content" in chunk.additional_kwargs
        and not chunk.tool_call_chunks
        and chunk.chunk_position != "last"
    )


async def _first_tool_call_only(stream: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    """``parallel_tool_calls=False``: pass the turn's first tool call (by index) and drop the
    rest, as OpenAI would never have returned them. The model was asked for one call."""
    first: int | None = None
    dropped: set[int] = set()
    async with aclosing(stream) as events:
        async for event in events:
            if isinstance(event, (ToolCallDelta, ToolCallEvent)):
                if first is None:
                    first = event.index
                if event.index != first:
                    if isinstance(event, ToolCallEvent):
                        dropped.add(event.index)
                    continue
            yield event
    if dropped:
        log.info("ChatCursor: parallel_tool_calls=False; dropped %d further tool call(s)", len(dropped))


class ChatCursor(BaseChatModel):
    """Chat model for the models of your Cursor subscription, via cursorpipe.

    Setup: set ``CURSOR_API_KEY`` (or pass ``api_key=``), or have the Cursor CLI installed and
    logged in; ``strategy`` picks the transport (see cursorpipe's README).

    .. code-block:: python

        from langchain_cursorpipe import ChatCursor

        llm = ChatCursor(model="auto")
        print(llm.invoke("Say hi in five words").content)
        for chunk in llm.stream("Count to five"):
            print(chunk.content, end="")

    Sessions: ``with_session()`` returns a model bound to one Cursor conversation. Cursor keeps the
    history, so each call sends only the messages Cursor has not seen yet:

    .. code-block:: python

        async with llm.with_session() as chat:
            await chat.ainvoke("My name is Ada.")
            print((await chat.ainvoke("What is my name?")).content)

    Without a session every call is stateless and sends the whole conversation.

    Response metadata carries ``model_name``, ``finish_reason`` and ``model_provider="cursor"``;
    thinking arrives in ``additional_kwargs["reasoning_content"]``; usage is on the message (and on
    exactly one streamed chunk, the last), with ``usage_estimated=True`` in the response metadata
    when the transport reported no counts.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str = Field(default="auto", alias="model_name")
    """Cursor model id (``auto`` lets Cursor choose); see ``CursorClient.list_models()``."""
    temperature: float | None = None
    """Accepted for compatibility and ignored: Cursor has no sampling parameters (a WARNING says
    so once per instance when it is set)."""
    top_p: float | None = None
    """Accepted for compatibility and ignored, like ``temperature``."""
    seed: int | None = None
    """Accepted for compatibility and ignored, like ``temperature``."""
    max_tokens: int | None = Field(default=None, alias="max_completion_tokens")
    """Cut the answer after about this many tokens (emulated: counted on the stream, which is then
    stopped; finish_reason 'length'). ``None``: no limit."""
    timeout: float | None = Field(default=None, alias="request_timeout")
    """Deadline of one call in seconds (default: cursorpipe's ``request_timeout_s``)."""
    max_retries: int | None = None
    """Retries of retryable failures before any output (default: cursorpipe's ``max_retries``)."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Default stop sequences (a call's ``stop`` replaces them); enforced on the stream."""
    reasoning_effort: str | None = None
    """OpenAI-style effort (``minimal``, ``low``, ``medium``, ``high``, ``xhigh``) mapped to the
    model's own effort parameter (connect transport); a call's ``reasoning_effort`` replaces it."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("CURSOR_API_KEY", default=None), alias="cursor_api_key"
    )
    """Cursor API key (``crsr_...``); read from ``CURSOR_API_KEY`` when not given."""
    streaming: bool = False
    """Whether ``invoke`` streams internally (callbacks then see every token)."""
    strategy: str | None = None
    """cursorpipe transport: ``connect``, ``acp``, ``subprocess`` or ``auto`` (default: config)."""
    backend_url: str | None = None
    """Where Connect RPC calls go (for example an emulator); default: cursorpipe's config."""
    agent_bin: str | None = None
    """Cursor CLI executable for the ``acp`` and ``subprocess`` transports."""
    client: CursorClient | None = Field(default=None, exclude=True)
    """A ready ``CursorClient`` to use instead of building one from the fields above. It is used
    as is from whatever loop calls it, so keep to one loop (async calls, or sync calls only)."""
    session: CursorSession | None = Field(default=None, exclude=True)
    """Bind to an existing ``CursorSession`` (advanced; ``with_session()`` is the easy way)."""

    _binding: SessionBinding[BaseMessage] | None = PrivateAttr(default=None)
    _warned_ignored: bool = PrivateAttr(default=False)

    def __init__(self, **kwargs: Any) -> None:
        """Build the model; an invalid argument raises ``cursorpipe.ConfigurationError`` naming it
        (other field errors stay pydantic ``ValidationError``s)."""
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise _our_error(exc) or exc from exc

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str | None) -> str | None:
        # Checked here so a typo fails at construction naming the argument, not at the first
        # call naming CURSORPIPE_STRATEGY.
        choices = [s.value for s in Strategy]
        if value is not None and value.strip().lower() not in choices:
            raise _bad_argument("strategy", f"must be one of {', '.join(choices)}, not {value!r}")
        return value.strip().lower() if value is not None else None

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise _bad_argument("timeout", f"must be a positive number of seconds, not {value!r}")
        return value

    @field_validator("max_retries")
    @classmethod
    def _check_max_retries(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise _bad_argument("max_retries", f"must be 0 or more, not {value!r}")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _check_max_tokens(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise _bad_argument("max_tokens", f"must be at least 1 (or None for no limit), not {value!r}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Wrap a given ``session`` in a binding that tracks what Cursor already holds, and say
        once if sampling parameters were set that Cursor does not have."""
        super().model_post_init(context)
        if self.session is not None:
            self._binding = _session_binding(self.session, owned=False)
        self._warn_ignored({name: getattr(self, name) for name in _IGNORED_SAMPLING})

    def _warn_ignored(self, values: Mapping[str, Any]) -> None:
        set_ = {name: value for name, value in values.items() if value is not None}
        if not set_ or self._warned_ignored:
            return
        self._warned_ignored = True
        log.warning(
            "ChatCursor: %s ignored: Cursor's API has no sampling parameters (temperature, top_p, "
            "seed); the model samples as Cursor configures it",
            ", ".join(f"{name}={value!r}" for name, value in set_.items()),
        )

    # ------------------------------------------------------------------------------------------
    # LangChain metadata
    # ------------------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "cursor-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "reasoning_effort": self.reasoning_effort,
            "strategy": self.strategy,
            "backend_url": self.backend_url,
        }

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """False: langchain-core 1.x deserializes only classes on its own allow-list
        (``langchain_core.load.mapping``), so a ``dumpd`` of ChatCursor could not be loaded back."""
        return False

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["langchain_cursorpipe", "chat_models"]``."""
        return ["langchain_cursorpipe", "chat_models"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        """The API key is a secret read from ``CURSOR_API_KEY``."""
        return {"api_key": "CURSOR_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=model if isinstance(model, str) and model else self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        facts = model_facts(self.model)
        return ModelProfile(
            max_input_tokens=facts.context_window,
            max_output_tokens=facts.max_output_tokens,
            text_inputs=True,
            image_inputs=facts.image_inputs,
            text_outputs=True,
            reasoning_output=facts.reasoning,
            # Native on connect, emulated in the prompt on acp/subprocess (issue 7).
            tool_calling=True,
            tool_choice=True,
            structured_output=True,
        )

    # ------------------------------------------------------------------------------------------
    # token counting (offline)
    # ------------------------------------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """Offline pseudo token ids (an estimate; Cursor publishes no tokenizer)."""
        return token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Estimated tokens in ``text`` (offline)."""
        return count_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Estimated tokens of a conversation (offline; tool schemas counted as JSON)."""
        total = _TOKENS_PER_CONVERSATION
        for message in messages:
            total += _TOKENS_PER_MESSAGE + count_tokens(message_text(message))
        for tool in tools or ():
            total += count_tokens(json.dumps(tool, default=str))
        return total

    # ------------------------------------------------------------------------------------------
    # tools and structured output (issue 7)
    # ------------------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic classes, TypedDicts or OpenAI tool
        dicts) to the model. Calls come back as ``AIMessage.tool_calls``; run them and pass the
        results back as ``ToolMessage`` objects in the next call (the stateless flow, which works
        on every cursorpipe transport).

        ``tool_choice``: ``"auto"``, ``"none"``, ``"required"``/``"any"``/``True`` (some tool must
        be called) or a tool's name (that tool must be called). Where the transport has no tool
        channel, cursorpipe offers the tools in the prompt and parses the model's JSON answer
        (``response_metadata["transport"]`` says which transport served the call).
        ``strict`` is recorded in the tool schemas (Cursor offers no constrained decoding).
        ``parallel_tool_calls=False`` asks the model for one call at a time (Cursor has no such
        switch) and passes at most the first call on to you.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        choice = normalize_tool_choice(tool_choice, formatted)
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable that answers with ``schema`` (a pydantic class → an instance of it; a
        TypedDict or JSON schema dict → a dict).

        ``method``: ``"json_schema"`` (default) asks for JSON matching the schema through
        cursorpipe's ``response_format``; the answer is validated against the schema, repaired
        once, and otherwise ``cursorpipe.StructuredOutputError`` is raised (the answer arrives
        whole, not token by token). ``"function_calling"`` forces a tool whose parameters are the
        schema; ``"json_mode"`` asks for any JSON object (describe the shape in the prompt).
        ``include_raw=True`` returns ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``
        instead of raising on a bad answer.
        """
        if kwargs:
            raise ConfigurationError(
                f"with_structured_output does not understand {', '.join(sorted(kwargs))}",
                code="invalid_request",
            )
        if schema is None and method != "json_mode":
            raise ConfigurationError(f"method {method!r} needs a schema", code="invalid_request")
        ls_format = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=ls_format
            )
            if is_pydantic_schema(schema):
                assert isinstance(schema, type)
                parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
            else:
                parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        elif method == "json_schema":
            _, response_format = response_format_for(schema, strict=strict)
            llm = self.bind(response_format=response_format, ls_structured_output_format=ls_format)
            parser = RunnableLambda(structured_parser(schema))
        elif method == "json_mode":
            llm = self.bind(
                response_format={"type": "json_object"},
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            )
            parser = RunnableLambda(structured_parser(schema))
        else:
            raise ConfigurationError(
                f"method must be json_schema, function_calling or json_mode, not {method!r}",
                code="invalid_request",
            )
        if not include_raw:
            return llm | parser
        with_parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        without = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | with_parsed.with_fallbacks([without], exception_key="parsing_error")

    # ------------------------------------------------------------------------------------------
    # configuration and clients
    # ------------------------------------------------------------------------------------------
    def _config_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if self.strategy:
            overrides["strategy"] = self.strategy
        if self.backend_url:
            overrides["backend_url"] = self.backend_url
        if self.agent_bin:
            overrides["agent_bin"] = self.agent_bin
        if self.api_key is not None and self.api_key.get_secret_value():
            overrides["api_key"] = self.api_key.get_secret_value()
        if self.max_retries is not None:
            overrides["max_retries"] = self.max_retries
        if self.timeout is not None:
            overrides["request_timeout_s"] = self.timeout
        return overrides

    def _client(self) -> CursorClient:
        if self.client is not None:
            return self.client
        return client_for_loop(self._config_overrides())

    def _options(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> _CallOptions:
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise ConfigurationError(
                f"ChatCursor does not understand the call argument(s) {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(_CALL_KWARGS - {'stream'}))}",
                code="invalid_request",
            )
        model = kwargs.get("model") or self.model
        if not isinstance(model, str):
            raise ConfigurationError("model must be a string", code="invalid_request")
        effective_stop = stop if stop is not None else self.stop
        self._warn_ignored({name: kwargs.get(name) for name in _IGNORED_SAMPLING})
        return _CallOptions(
            model=model,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            timeout=kwargs.get("timeout", self.timeout),
            stop=list(effective_stop) if effective_stop else None,
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
            parallel_tool_calls=kwargs.get("parallel_tool_calls") is not False,
            reasoning_effort=kwargs.get("reasoning_effort", self.reasoning_effort),
        )

    # ------------------------------------------------------------------------------------------
    # the one async pipeline
    # ------------------------------------------------------------------------------------------
    async def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        options = self._options(stop, kwargs)
        builder = ChunkBuilder(model=options.model, input_text="\n".join(message_text(m) for m in messages))
        binding = self._binding
        stream: AsyncGenerator[Event, None]
        if binding is not None:
            stream = self._session_events(binding, messages, options)
        elif options.response_format is not None:
            stream = self._structured_events(messages, options, builder)
        else:
            stream = self._client().events(
                options.model,
                self._cursor_messages(messages, options),
                temperature=options.temperature,
                max_tokens=options.max_tokens,
                stop=options.stop,
                timeout_s=options.timeout,
                tools=options.tools,
                tool_choice=options.tool_choice,
                reasoning_effort=options.reasoning_effort,
            )
        if not options.parallel_tool_calls and options.tools:
            stream = _first_tool_call_only(stream)
        reasoning: list[str] = []
        async with aclosing(stream) as events:
            async for event in events:
                chunk = builder.feed(event)
                if chunk is None:
                    continue
                if _reasoning_only(chunk):
                    # LangChain fires on_llm_new_token for every chunk; a reasoning-only chunk
                    # would fire it with an empty token. Its reasoning rides on the next chunk.
                    reasoning.append(str(chunk.additional_kwargs["reasoning_content"]))
                    continue
                if reasoning:
                    earlier = "".join(reasoning) + str(chunk.additional_kwargs.get("reasoning_content", ""))
                    chunk.additional_kwargs["reasoning_content"] = earlier
                    reasoning.clear()
                yield ChatGenerationChunk(message=chunk)

    def _cursor_messages(self, messages: list[BaseMessage], options: _CallOptions) -> list[dict[str, Any]]:
        converted = list(to_cursor_messages(messages))
        if not options.parallel_tool_calls and options.tools:
            converted.insert(0, {"role": "system", "content": _ONE_TOOL_CALL})
        return converted

    async def _structured_events(
        self, messages: list[BaseMessage], options: _CallOptions, builder: ChunkBuilder
    ) -> AsyncGenerator[Event, None]:
        """One turn with a ``response_format``, through ``CursorClient.complete``: the answer is
        validated against the schema there (one repair round, then ``StructuredOutputError``), so
        it arrives whole rather than token by token. The validated value rides on the message as
        ``additional_kwargs["parsed"]``; a final failure is recorded there too (as
        ``structured_output_error``/``raw``) so ``with_structured_output(include_raw=True)`` can
        report it as a parsing error instead of losing the raw answer."""
        try:
            result = await self._client().complete(
                options.model,
                self._cursor_messages(messages, options),
                temperature=options.temperature,
                max_tokens=options.max_tokens,
                stop=options.stop,
                timeout_s=options.timeout,
                tools=options.tools,
                tool_choice=options.tool_choice,
                response_format=options.response_format,
                reasoning_effort=options.reasoning_effort,
            )
        except StructuredOutputError as exc:
            builder.extra_kwargs["structured_output_error"] = exc.message
            yield TextDelta(exc.raw)
            yield TurnEnd("stop")
            return
        builder.extra_kwargs["parsed"] = result.parsed
        yield TransportInfo(
            transport=result.transport or "",
            model=result.model,
            session_id=result.session_id,
            fallback_from=result.fallback_from,
        )
        for notice in result.notices:
            yield TextDelta(notice, notice=True)
        if result.text:
            yield TextDelta(result.text)
        for index, call in enumerate(result.tool_calls):
            yield ToolCallEvent(call, index=index)
        for offset, bad in enumerate(result.invalid_tool_calls, start=len(result.tool_calls)):
            yield ToolCallEvent(bad.call, index=offset, emulated=bad.emulated, error=bad.error)
        yield TurnEnd(result.stop_reason, result.usage)

    async def _session_events(
        self, binding: SessionBinding[BaseMessage], messages: list[BaseMessage], options: _CallOptions
    ) -> AsyncGenerator[Event, None]:
        if options.tools or options.response_format is not None:
            # A Cursor session takes one user text per turn; tool results and schemas travel in
            # stateless calls, which carry the whole exchange.
            raise ConfigurationError(
                "tools and structured output are not supported on session-bound calls; use the "
                "model without with_session() for them",
                code="invalid_request",
            )
        binding.check_loop()
        if binding.lock is None:
            binding.lock = asyncio.Lock()
        async with binding.lock:
            new = binding.new_messages(messages)
            text = _session_text(new)
            if binding.session is None:
                binding.session = await self._client().create_session(options.model)
            reply: list[str] = []
            events = binding.session.events(
                text,
                timeout_s=options.timeout,
                stop=options.stop,
                max_tokens=options.max_tokens,
                reasoning_effort=options.reasoning_effort,
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta) and not event.notice:
                        reply.append(event.text)
                    yield event
            binding.record(messages, new, "".join(reply))

    async def _collect(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> ChatResult:
        text: list[str] = []
        reasoning: list[str] = []
        tool_chunks: list[ToolCallChunk] = []
        last: AIMessageChunk | None = None
        async with aclosing(self._chunks(messages, stop, kwargs)) as chunks:
            async for generation in chunks:
                chunk = generation.message
                assert isinstance(chunk, AIMessageChunk)
                if isinstance(chunk.content, str):
                    text.append(chunk.content)
                if "reasoning_content" in chunk.additional_kwargs:
                    reasoning.append(str(chunk.additional_kwargs["reasoning_content"]))
                tool_chunks.extend(chunk.tool_call_chunks)
                if chunk.chunk_position == "last":
                    last = chunk
        if last is None:
            raise SessionError("the turn ended without a final event", code="stream_incomplete")
        tools = _tool_calls_from_chunks(tool_chunks)
        calls, invalid = _split_invalid(tools, last.additional_kwargs.get("tool_errors"))
        extra = {k: v for k, v in last.additional_kwargs.items() if k != "tool_errors"}
        if reasoning:
            extra["reasoning_content"] = "".join(reasoning)
        message = AIMessage(
            content="".join(text),
            additional_kwargs=extra,
            response_metadata=dict(last.response_metadata),
            usage_metadata=last.usage_metadata,
            tool_calls=calls,
            invalid_tool_calls=invalid,
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": last.response_metadata.get("model_name")},
        )

    # ------------------------------------------------------------------------------------------
    # BaseChatModel hooks
    # ------------------------------------------------------------------------------------------
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._collect(messages, stop, kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async with aclosing(self._chunks(messages, stop, kwargs)) as chunks:
            async for chunk in chunks:
                # Core fires on_llm_new_token itself on the paths that pass no run_manager.
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return SyncBridge.default().run(lambda: self._collect(messages, stop, kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks = SyncBridge.default().iterate(lambda: self._chunks(messages, stop, kwargs))
        try:
            for chunk in chunks:
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            # Leaving early (break, error) closes the async stream on the bridge loop, which
            # cancels the Cursor run.
            close = getattr(chunks, "close", None)
            if callable(close):
                close()

    # ------------------------------------------------------------------------------------------
    # sessions
    # ------------------------------------------------------------------------------------------
    def with_session(self) -> ChatCursor:
        """A copy of this model bound to a new Cursor conversation (opened on the first call).

        Cursor keeps the history: pass the whole conversation or only the new messages, and only
        what Cursor has not seen is sent. Use it as a context manager (``with`` for sync calls,
        ``async with`` for async ones) or call ``end_session()`` / ``aend_session()`` when done.
        """
        bound = self.model_copy(update={"session": None})
        bound._binding = _session_binding()
        return bound

    @property
    def session_id(self) -> str | None:
        """Cursor's id of the bound conversation (``None`` when unbound or not opened yet)."""
        return self._binding.session_id if self._binding is not None else None

    async def aend_session(self) -> None:
        """Discard the bound Cursor conversation (a later call opens a new one). Idempotent."""
        if self._binding is not None:
            await self._binding.aend()

    def end_session(self) -> None:
        """Sync twin of :meth:`aend_session` for sessions used through sync calls."""
        if self._binding is not None:
            self._binding.end()

    def __enter__(self) -> ChatCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_session()

    async def __aenter__(self) -> ChatCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aend_session()

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the client this model built for the running loop (injected clients are left to
        their owner). The next call builds a fresh one."""
        await self.aend_session()
        if self.client is None:
            await close_clients(self._config_overrides())

    def close(self) -> None:
        """Close the client this model built for sync calls (on the sync bridge's loop)."""
        self.end_session()
        if self.client is None:
            overrides = self._config_overrides()
            SyncBridge.default().run(lambda: close_clients(overrides))
