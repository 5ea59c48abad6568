"""``CursorLLM``: a LlamaIndex LLM for the models of a Cursor subscription.

A thin adapter (design.md lesson 12): LlamaIndex chat messages go to
``cursorpipe.CursorClient.events`` and the typed events that come back become ``ChatResponse``
objects. The async methods are native; the sync ones run the same async code on
``cursorpipe.SyncBridge`` (design.md lesson 4). Completion methods are derived from chat.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cursorpipe import (
    ConfigurationError,
    CursorClient,
    CursorSession,
    Event,
    ModelInfo,
    SessionBinding,
    SessionError,
    SyncBridge,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    Usage,
    UsageEvent,
    client_for_loop,
    close_clients,
    model_facts,
)
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json
from pydantic import Field, PrivateAttr, SecretStr, field_serializer

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["CursorLLM"]

_CALL_KWARGS = frozenset(
    {
        "model",
        "temperature",
        "top_p",
        "seed",
        "max_tokens",
        "stop",
        "timeout",
        "tools",
        "tool_choice",
        "reasoning_effort",
    }
)
#: Sampling parameters LlamaIndex callers set that no Cursor transport has.
_IGNORED_SAMPLING = ("temperature", "top_p", "seed")

log = logging.getLogger("llamaindex_cursorpipe")
_CHARS_PER_TOKEN = 4.0  # the same rough rule cursorpipe uses for its own estimates
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}
_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _estimate(text: str) -> int:
    return max(1, round(len(text) / _CHARS_PER_TOKEN)) if text else 0


@dataclass(frozen=True, slots=True)
class _CallOptions:
    model: str
    temperature: float | None
    max_tokens: int | None
    stop: list[str] | None
    timeout: float | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    reasoning_effort: str | None = None


# ----------------------------------------------------------------------------------------------
# LlamaIndex -> cursorpipe
# ----------------------------------------------------------------------------------------------
def _message_text(message: ChatMessage) -> str:
    return "".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def _user_content(message: ChatMessage, where: str) -> str | list[dict[str, Any]]:
    if all(isinstance(b, TextBlock) for b in message.blocks):
        return _message_text(message)
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(message.blocks):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            if block.url is not None and block.image is None and block.path is None:
                url = str(block.url)  # a remote image is passed on, never downloaded here
            else:
                url = block.inline_url()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise ConfigurationError(
                f"{where}.blocks[{i}]: {block.block_type!r} blocks are not supported "
                "(Cursor accepts text and images)",
                code="invalid_request",
            )
    return parts


def to_cursor_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as OpenAI-style dicts for ``CursorClient.events``."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = _ROLES.get(message.role)
        if role is None:
            raise ConfigurationError(f"{where}: unsupported role {message.role!r}", code="invalid_request")
        entry: dict[str, Any] = {"role": role}
        if role == "user":
            entry["content"] = _user_content(message, where)
        else:
            entry["content"] = _message_text(message)
        if role == "tool":
            entry["tool_call_id"] = str(message.additional_kwargs.get("tool_call_id", ""))
        calls = message.additional_kwargs.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            entry["tool_calls"] = calls
        elif role == "assistant":
            blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
            if blocks:
                entry["tool_calls"] = [_openai_call(b, n) for n, b in enumerate(blocks)]
        name = message.additional_kwargs.get("name")
        if isinstance(name, str) and name and role != "tool":
            entry["name"] = name
        out.append(entry)
    return out


def _openai_call(block: ToolCallBlock, n: int) -> dict[str, Any]:
    """A ``ToolCallBlock`` (how current llama-index-core records calls) as an OpenAI tool call."""
    args = block.tool_kwargs if isinstance(block.tool_kwargs, str) else json.dumps(block.tool_kwargs)
    return {
        "id": block.tool_call_id or f"call_{n}",
        "type": "function",
        "function": {"name": block.tool_name, "arguments": args},
    }


def _parse_args(text: str) -> dict[str, Any] | None:
    """Tool arguments as a dict (``None`` while they are incomplete or not a JSON object)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _partial_args(text: str) -> dict[str, Any]:
    """Arguments of a call still streaming: what LlamaIndex's partial-JSON parser recovers."""
    try:
        value = parse_partial_json(text)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return {}
    return value if isinstance(value, dict) else {}


def _tool_choice(
    tool_choice: str | Mapping[str, Any] | None, tool_required: bool, names: Sequence[str]
) -> str | dict[str, Any]:
    """LlamaIndex's ``tool_choice``/``tool_required`` as the OpenAI form the core takes."""
    if tool_choice is None:
        return "required" if tool_required else "auto"
    if isinstance(tool_choice, Mapping):
        return dict(tool_choice)
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    if tool_choice == "any":
        return "required"
    if tool_choice in names:
        return {"type": "function", "function": {"name": tool_choice}}
    raise ConfigurationError(
        f"tool_choice {tool_choice!r} is neither auto/none/required nor one of the tools "
        f"({', '.join(names) or 'none given'})",
        code="invalid_request",
    )


# ----------------------------------------------------------------------------------------------
# cursorpipe -> LlamaIndex
# ----------------------------------------------------------------------------------------------
@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    error: str | None = None


def _usage_dict(usage: Usage) -> dict[str, Any]:
    """Usage under both naming conventions, so TokenCountingHandler (which reads ``prompt_tokens``
    or ``input_tokens``) and OpenAI-minded code both find it."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


@dataclass
class _Turn:
    """Accumulates one turn's events into cumulative ``ChatResponse`` objects."""

    model: str
    input_text: str
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    usage: Usage | None = None
    served_model: str | None = None
    session_id: str | None = None
    transport: str | None = None
    done: bool = False
    calls: dict[int, _PendingCall] = field(default_factory=dict)
    tools_emulated: bool = False

    def message(self) -> ChatMessage:
        """The cumulative assistant message: thinking, text, then one ``ToolCallBlock`` per valid
        tool call, mirrored in ``additional_kwargs["tool_calls"]`` (OpenAI shape, as
        llama-index's OpenAI LLM keeps them); calls the core flagged invalid go to
        ``additional_kwargs["invalid_tool_calls"]`` with the reason, never to a tool."""
        blocks: list[Any] = []
        if self.thinking:
            blocks.append(ThinkingBlock(content="".join(self.thinking)))
        blocks.append(TextBlock(text="".join(self.text)))
        extra: dict[str, Any] = {}
        valid = [c for _, c in sorted(self.calls.items()) if c.error is None]
        invalid = [c for _, c in sorted(self.calls.items()) if c.error is not None]
        for call in valid:
            parsed = _parse_args(call.arguments)
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.id,
                    tool_name=call.name,
                    tool_kwargs=parsed if parsed is not None else call.arguments,
                )
            )
        if valid:
            extra["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in valid
            ]
        if invalid:
            extra["invalid_tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments, "error": c.error} for c in invalid
            ]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)

    def feed(self, event: Event) -> ChatResponse | None:
        if isinstance(event, TextDelta):
            if event.notice:
                # connect.md §7: notices (quota, model substitution) are not model output.
                self.notices.append(event.text)
                return None
            if not event.text:
                return None
            self.text.append(event.text)
            return ChatResponse(message=self.message(), delta=event.text)
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return None
            self.thinking.append(event.text)
            # LlamaIndex agents read reasoning deltas from additional_kwargs["thinking_delta"].
            return ChatResponse(
                message=self.message(), delta="", additional_kwargs={"thinking_delta": event.text}
            )
        if isinstance(event, ToolCallDelta):
            pending = self.calls.setdefault(event.index, _PendingCall())
            pending.id = pending.id or (event.id or "")
            pending.name = pending.name or (event.name or "")
            pending.arguments += event.arguments_delta
            return ChatResponse(message=self.message(), delta="")
        if isinstance(event, ToolCallEvent):
            # The complete call is authoritative over the streamed deltas.
            self.tools_emulated = self.tools_emulated or event.emulated
            self.calls[event.index] = _PendingCall(
                id=event.call.id, name=event.call.name, arguments=event.call.arguments, error=event.error
            )
            return ChatResponse(message=self.message(), delta="")
        if isinstance(event, TransportInfo):
            self.transport = event.transport
            self.served_model = event.model or self.served_model
            self.session_id = event.session_id or self.session_id
            return None
        if isinstance(event, UsageEvent):
            self.usage = event.usage
            return None
        if isinstance(event, TurnEnd):
            return self.final(event.stop_reason, event.usage or self.usage)
        return None

    def final(self, stop_reason: str, usage: Usage | None) -> ChatResponse:
        self.done = True
        if usage is None:
            usage = Usage(
                input_tokens=_estimate(self.input_text),
                output_tokens=_estimate("".join(self.text)),
                estimated=True,
            )
        counts = _usage_dict(usage)
        raw: dict[str, Any] = {
            "model": self.served_model or self.model,
            "finish_reason": _FINISH.get(stop_reason, stop_reason),
            "usage": counts,
            "usage_estimated": usage.estimated,
        }
        if self.transport:
            raw["transport"] = self.transport
        if self.session_id:
            raw["session_id"] = self.session_id
        if self.notices:
            raw["notices"] = list(self.notices)
        if self.thinking:
            raw["thinking"] = "".join(self.thinking)
        if self.tools_emulated:
            raw["tool_calls_emulated"] = True  # parsed from text: the transport has no tool channel
        extra = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "usage_estimated": usage.estimated,
            "model": raw["model"],
            "finish_reason": raw["finish_reason"],
        }
        return ChatResponse(message=self.message(), delta="", raw=raw, additional_kwargs=extra)


# ----------------------------------------------------------------------------------------------
# sessions
# ----------------------------------------------------------------------------------------------
def _message_key(message: ChatMessage) -> tuple[str, str]:
    return (_ROLES.get(message.role, str(message.role)), _message_text(message))


def _session_binding(
    session: CursorSession | None = None, *, owned: bool = True
) -> SessionBinding[ChatMessage]:
    """The Cursor conversation a session-bound ``CursorLLM`` talks to (see ``with_session``)."""
    return SessionBinding(
        _message_key, label="CursorLLM", reply_role="assistant", session=session, owned=owned
    )


def _session_text(messages: Sequence[ChatMessage]) -> str:
    if not any(m.role == MessageRole.USER for m in messages):
        raise ConfigurationError("a session turn needs at least one new user message", code="invalid_request")
    for i, m in enumerate(messages):
        if any(not isinstance(b, TextBlock) for b in m.blocks if m.role == MessageRole.USER):
            raise ConfigurationError(
                f"messages[{i}]: session turns carry text only; send images in a stateless call",
                code="invalid_request",
            )
    if len(messages) == 1:
        return _message_text(messages[0])
    parts: list[str] = []
    for m in messages:
        text = _message_text(m)
        role = _ROLES.get(m.role, str(m.role))
        if role == "system":
            parts.append(f"System instructions:\n{text}")
        elif role == "user":
            parts.append(text)
        elif role == "assistant":
            parts.append(f"(Earlier assistant answer: {text})")
        else:
            parts.append(f"({role} message: {text})")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------
# the LLM
# ----------------------------------------------------------------------------------------------
class CursorLLM(FunctionCallingLLM):
    """LlamaIndex LLM for the models of your Cursor subscription, via cursorpipe.

    .. code-block:: python

        from llama_index.core import Settings
        from llama_index.llms.cursorpipe import CursorLLM

        Settings.llm = CursorLLM(model="auto")
        print(Settings.llm.complete("Say hi in five words"))

    Every method (``chat``, ``stream_chat``, ``complete``, ``stream_complete`` and the ``a*``
    versions) fires LlamaIndex's callbacks and instrumentation. Streamed responses carry the
    cumulative message (with a ``ThinkingBlock`` when the model thinks), the text ``delta`` and
    reasoning deltas in ``additional_kwargs["thinking_delta"]``; the final response carries usage
    in ``raw["usage"]`` and ``additional_kwargs`` so ``TokenCountingHandler`` counts real tokens.

    ``with_session()`` returns a copy bound to one Cursor conversation (Cursor keeps the history
    and each call sends only what Cursor has not seen); without it every call is stateless.
    """

    model: str = Field(default="auto", description="Cursor model id ('auto' lets Cursor choose).")
    temperature: float | None = Field(
        default=None,
        description="Ignored: Cursor has no sampling parameters (a WARNING says so once per instance).",
    )
    top_p: float | None = Field(default=None, description="Ignored, like temperature.")
    seed: int | None = Field(default=None, description="Ignored, like temperature.")
    max_tokens: int | None = Field(
        default=None,
        description="Cut answers after about this many tokens (emulated: counted on the stream, "
        "which is then stopped; finish_reason 'length'). None: no limit.",
    )
    timeout: float | None = Field(default=None, description="Deadline of one call in seconds.")
    reasoning_effort: str | None = Field(
        default=None,
        description="OpenAI-style effort (minimal, low, medium, high, xhigh), mapped to the model's own "
        "effort parameter (connect transport).",
    )
    max_retries: int | None = Field(default=None, description="Retries of retryable failures.")
    api_key: SecretStr | None = Field(
        default=None, description="Cursor API key; read from CURSOR_API_KEY when not given."
    )
    strategy: str | None = Field(default=None, description="connect | acp | subprocess | auto.")
    backend_url: str | None = Field(default=None, description="Where Connect RPC calls go.")
    agent_bin: str | None = Field(default=None, description="Cursor CLI executable (acp, subprocess).")
    context_window: int | None = Field(
        default=None, description="Override the model's context window (tokens) in `metadata`."
    )
    client: CursorClient | None = Field(
        default=None, exclude=True, description="A ready CursorClient to use instead of building one."
    )
    session: CursorSession | None = Field(
        default=None, exclude=True, description="Bind to an existing CursorSession (advanced)."
    )

    _binding: SessionBinding[ChatMessage] | None = PrivateAttr(default=None)
    _model_info: ModelInfo | None = PrivateAttr(default=None)
    _warned_ignored: bool = PrivateAttr(default=False)

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
            "CursorLLM: %s ignored: Cursor's API has no sampling parameters (temperature, top_p, "
            "seed); the model samples as Cursor configures it",
            ", ".join(f"{name}={value!r}" for name, value in set_.items()),
        )

    @field_serializer("api_key")
    def _drop_secret(self, value: SecretStr | None) -> None:
        # LlamaIndex serializes components (to_dict/to_json, storage contexts): never write the key.
        return None

    @classmethod
    def class_name(cls) -> str:
        """``"CursorLLM"``."""
        return "CursorLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Chat model metadata with the model's real context window and output size."""
        facts = model_facts(self.model)
        info = self._model_info
        context = self.context_window or (info.context_window if info else None) or facts.context_window
        output = self.max_tokens or (info.max_output_tokens if info else None) or facts.max_output_tokens
        return LLMMetadata(
            context_window=context,
            num_output=output,
            is_chat_model=True,
            # Native on connect, emulated in the prompt on acp/subprocess (issue 7).
            is_function_calling_model=True,
            model_name=self.model,
            system_role=MessageRole.SYSTEM,
        )

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

    def _options(self, kwargs: Mapping[str, Any]) -> _CallOptions:
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise ConfigurationError(
                f"CursorLLM does not understand the call argument(s) {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(_CALL_KWARGS))}",
                code="invalid_request",
            )
        model = kwargs.get("model") or self.model
        if not isinstance(model, str):
            raise ConfigurationError("model must be a string", code="invalid_request")
        stop = kwargs.get("stop")
        self._warn_ignored({name: kwargs.get(name) for name in _IGNORED_SAMPLING})
        return _CallOptions(
            model=model,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=list(stop) if stop else None,
            timeout=kwargs.get("timeout", self.timeout),
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            reasoning_effort=kwargs.get("reasoning_effort", self.reasoning_effort),
        )

    async def arefresh_model_info(self) -> ModelInfo | None:
        """Ask Cursor for the model's details (used by ``metadata`` when they include limits)."""
        for info in await self._client().list_models():
            if info.matches(self.model):
                self._model_info = info
                return info
        return None

    def refresh_model_info(self) -> ModelInfo | None:
        """Sync version of :meth:`arefresh_model_info`."""
        return SyncBridge.default().run(self.arefresh_model_info)

    # ------------------------------------------------------------------------------------------
    # the one async pipeline
    # ------------------------------------------------------------------------------------------
    async def _responses(
        self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]
    ) -> AsyncGenerator[ChatResponse, None]:
        options = self._options(kwargs)
        turn = _Turn(model=options.model, input_text="\n".join(_message_text(m) for m in messages))
        binding = self._binding
        if binding is not None:
            stream = self._session_events(binding, messages, options)
        else:
            stream = self._client().events(
                options.model,
                to_cursor_messages(messages),
                temperature=options.temperature,
                max_tokens=options.max_tokens,
                stop=options.stop,
                timeout_s=options.timeout,
                tools=options.tools,
                tool_choice=options.tool_choice,
                reasoning_effort=options.reasoning_effort,
            )
        async with aclosing(stream) as events:
            async for event in events:
                response = turn.feed(event)
                if response is not None:
                    yield response
        if not turn.done:
            raise SessionError("the turn ended without a final event", code="stream_incomplete")

    async def _session_events(
        self, binding: SessionBinding[ChatMessage], messages: Sequence[ChatMessage], options: _CallOptions
    ) -> AsyncGenerator[Event, None]:
        if options.tools:
            # A Cursor session takes one user text per turn; tool results travel in stateless
            # calls, which carry the whole exchange.
            raise ConfigurationError(
                "tools are not supported on session-bound calls; use the LLM without with_session()",
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

    async def _final(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> ChatResponse:
        last: ChatResponse | None = None
        async with aclosing(self._responses(messages, kwargs)) as responses:
            async for response in responses:
                last = response
        assert last is not None  # _responses raises when the turn has no final event
        return last

    # ------------------------------------------------------------------------------------------
    # chat
    # ------------------------------------------------------------------------------------------
    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer a conversation."""
        return await self._final(messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Stream the answer to a conversation (cumulative message, ``delta``, thinking)."""

        async def gen() -> ChatResponseAsyncGen:
            async with aclosing(self._responses(messages, kwargs)) as responses:
                async for response in responses:
                    yield response

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer a conversation (sync, through cursorpipe's sync bridge)."""
        return SyncBridge.default().run(lambda: self._final(messages, kwargs))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the answer to a conversation (sync, through cursorpipe's sync bridge)."""

        def gen() -> ChatResponseGen:
            responses = SyncBridge.default().iterate(lambda: self._responses(messages, kwargs))
            try:
                yield from responses
            finally:
                # Leaving early closes the async stream on the bridge loop (cancels the run).
                close = getattr(responses, "close", None)
                if callable(close):
                    close()

        return gen()

    # ------------------------------------------------------------------------------------------
    # function calling (issue 7)
    # ------------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The ``chat`` arguments offering ``tools`` (OpenAI tool dicts, which the core sends on
        the transport's tool channel or emulates in the prompt). ``tool_required`` → the model
        must call a tool; ``tool_choice`` (``auto``/``none``/``required``/a tool name/a dict)
        takes precedence. Results go back as ``tool`` role messages in the next call (stateless)."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        if specs:
            names = [spec["function"]["name"] for spec in specs]
            kwargs["tools"] = specs
            kwargs["tool_choice"] = _tool_choice(tool_choice, tool_required, names)
        return {"messages": messages, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls were allowed."""
        if allow_parallel_tool_calls:
            return response
        message = response.message
        blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
        if len(blocks) > 1:
            first = blocks[0]
            message.blocks = [b for b in message.blocks if not isinstance(b, ToolCallBlock) or b is first]
            calls = message.additional_kwargs.get("tool_calls")
            if isinstance(calls, list):
                message.additional_kwargs["tool_calls"] = calls[:1]
        return response

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """The tool calls of a response as ``ToolSelection`` objects (arguments as a dict; while a
        streamed call's arguments are incomplete, what of them parses so far). Raises
        ``ValueError`` when there is none and ``error_on_no_tool_call`` is set, as LlamaIndex's
        programs expect."""
        selections: list[ToolSelection] = []
        for block in response.message.blocks:
            if not isinstance(block, ToolCallBlock):
                continue
            args = block.tool_kwargs
            if isinstance(args, str):
                args = _partial_args(args)
            selections.append(
                ToolSelection(tool_id=block.tool_call_id or "", tool_name=block.tool_name, tool_kwargs=args)
            )
        if not selections and error_on_no_tool_call:
            invalid = response.message.additional_kwargs.get("invalid_tool_calls")
            detail = f" (invalid tool calls: {invalid})" if invalid else ""
            raise ValueError(f"Expected at least one tool call, but got 0 tool calls{detail}.")
        return selections

    # ------------------------------------------------------------------------------------------
    # completion (derived from chat)
    # ------------------------------------------------------------------------------------------
    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer one prompt."""
        return await achat_to_completion_decorator(self._achat_plain)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Stream the answer to one prompt."""
        return await astream_chat_to_completion_decorator(self._astream_chat_plain)(prompt, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer one prompt (sync)."""
        return chat_to_completion_decorator(self._chat_plain)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream the answer to one prompt (sync)."""
        return stream_chat_to_completion_decorator(self._stream_chat_plain)(prompt, **kwargs)

    # Undecorated chat paths for the completion methods, so one call fires one set of callbacks.
    async def _achat_plain(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._final(messages, kwargs)

    async def _astream_chat_plain(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return self._responses(messages, kwargs)

    def _chat_plain(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return SyncBridge.default().run(lambda: self._final(messages, kwargs))

    def _stream_chat_plain(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            responses = SyncBridge.default().iterate(lambda: self._responses(messages, kwargs))
            try:
                yield from responses
            finally:
                close = getattr(responses, "close", None)
                if callable(close):
                    close()

        return gen()

    # ------------------------------------------------------------------------------------------
    # sessions and lifecycle
    # ------------------------------------------------------------------------------------------
    def with_session(self) -> CursorLLM:
        """A copy bound to a new Cursor conversation (opened on the first call).

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
        """Sync version of :meth:`aend_session` for sessions used through sync calls."""
        if self._binding is not None:
            self._binding.end()

    def __enter__(self) -> CursorLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_session()

    async def __aenter__(self) -> CursorLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aend_session()

    async def aclose(self) -> None:
        """Close the client this LLM built for the running loop (injected clients are left alone)."""
        await self.aend_session()
        if self.client is None:
            await close_clients(self._config_overrides())

    def close(self) -> None:
        """Close the client this LLM built for sync calls (on the sync bridge's loop)."""
        self.end_session()
        if self.client is None:
            overrides = self._config_overrides()
            SyncBridge.default().run(lambda: close_clients(overrides))
