"""``ChatCursor``: a LangChain chat model for the models of a Cursor subscription.

A thin adapter (design.md lesson 12) on cursorpipe's integration kit (``cursorpipe.integration``,
which owns options, clients, sessions and lifecycle): LangChain messages become
``cursorpipe.ChatMessage`` objects, and the typed events that come back become ``AIMessageChunk``
objects. The async methods are native; the sync ones run the same async code on
``cursorpipe.SyncBridge`` (design.md lesson 4).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from operator import itemgetter
from typing import Any, ClassVar

from cursorpipe import (
    AdapterMixin,
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
    TurnEnd,
    TurnRequest,
    model_facts,
)
from cursorpipe import ChatMessage as CursorMessage
from cursorpipe.integration import CallOptions, normalize_tool_choice, sync_stream
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput, ModelProfile
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from ._convert import PROVIDER, ChunkBuilder, message_text, to_cursor_messages
from ._structured import StructuredMethod, is_pydantic_schema, response_format_for, structured_parser
from ._tokens import count_tokens, token_ids

__all__ = ["ChatCursor"]

log = logging.getLogger("langchain_cursorpipe")

#: Told to the model when the caller asked for ``parallel_tool_calls=False`` (Cursor's protocol
#: has no such switch, connect.md §6.1); calls beyond the first are also dropped on the way back.
_ONE_TOOL_CALL = (
    "Call at most one tool in this answer. If more tools are needed, call the first one only and "
    "wait for its result."
)
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


class ChatCursor(AdapterMixin, BaseChatModel):
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

    adapter_label: ClassVar[str] = "ChatCursor"
    call_kwargs: ClassVar[frozenset[str]] = _CALL_KWARGS
    adapter_log: ClassVar[logging.Logger] = log

    _binding: SessionBinding[CursorMessage] | None = PrivateAttr(default=None)
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
        self._adapter_post_init()

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
        names = [t["function"]["name"] for t in formatted if isinstance(t.get("function"), Mapping)]
        choice = normalize_tool_choice(tool_choice, names)
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
    # the one async pipeline
    # ------------------------------------------------------------------------------------------
    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[list[CursorMessage], CallOptions, ChunkBuilder]:
        options = self._call_options(kwargs, stop=stop if stop is not None else self.stop)
        converted = to_cursor_messages(messages)
        if options.first_tool_only:
            converted.insert(0, CursorMessage.of("system", _ONE_TOOL_CALL))
        return converted, options, ChunkBuilder(TurnRequest(model=options.model, messages=tuple(converted)))

    async def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        async with aclosing(self._turn_chunks(*self._prepare(messages, stop, kwargs))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _turn_chunks(
        self, messages: list[CursorMessage], options: CallOptions, builder: ChunkBuilder
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        reasoning: list[str] = []
        async with aclosing(self._events(messages, options, builder)) as events:
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

    async def _events(
        self, messages: list[CursorMessage], options: CallOptions, builder: ChunkBuilder
    ) -> AsyncGenerator[Event, None]:
        """The turn's events. A structured turn that still fails validation after the core's
        repair round ends with the raw answer and the failure recorded on the message
        (``additional_kwargs["structured_output_error"]``), so
        ``with_structured_output(include_raw=True)`` reports it as a parsing error instead of
        losing the answer."""
        stream = self._turn_events(messages, options)
        if options.first_tool_only:
            stream = _first_tool_call_only(stream)
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    yield event
        except StructuredOutputError as exc:
            if options.response_format is None:
                raise
            builder.extra_kwargs["structured_output_error"] = exc.message
            yield TextDelta(exc.raw)
            yield TurnEnd("stop")

    async def _collect(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> ChatResult:
        """The whole answer: the turn's fold (``builder.acc``) and its final chunk's metadata."""
        turn, options, builder = self._prepare(messages, stop, kwargs)
        last: AIMessageChunk | None = None
        async with aclosing(self._turn_chunks(turn, options, builder)) as chunks:
            async for generation in chunks:
                chunk = generation.message
                if isinstance(chunk, AIMessageChunk) and chunk.chunk_position == "last":
                    last = chunk
        if last is None:
            raise SessionError("the turn ended without a final event", code="stream_incomplete")
        acc = builder.acc
        calls, invalid = builder.tool_calls()
        extra = {k: v for k, v in last.additional_kwargs.items() if k != "tool_errors"}
        if acc.thinking:
            extra["reasoning_content"] = acc.thinking
        message = AIMessage(
            content=acc.text,
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
        for chunk in sync_stream(lambda: self._chunks(messages, stop, kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
