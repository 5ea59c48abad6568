"""``CursorLLM``: a LlamaIndex LLM for the models of a Cursor subscription.

A thin adapter (design.md lesson 12) on cursorpipe's integration kit (``cursorpipe.integration``,
which owns options, clients, sessions and lifecycle): LlamaIndex chat messages become
``cursorpipe.ChatMessage`` objects (``utils.py``), and the typed events that come back become
``ChatResponse`` objects. The async methods are native; the sync ones run the same async code on
``cursorpipe.SyncBridge`` (design.md lesson 4). Completion methods are derived from chat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar

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
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr, SecretStr, field_serializer

from cursorpipe import (
    AdapterMixin,
    CursorClient,
    CursorSession,
    ModelInfo,
    SessionBinding,
    SessionError,
    SyncBridge,
    TurnRequest,
    model_facts,
)
from cursorpipe import ChatMessage as CursorMessage
from cursorpipe.integration import normalize_tool_choice, sync_stream

from .utils import ResponseBuilder, partial_args, to_cursor_messages

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
# The logger of the distribution's original import name, which users may already configure.
log = logging.getLogger("llamaindex_cursorpipe")


# ----------------------------------------------------------------------------------------------
# the LLM
# ----------------------------------------------------------------------------------------------
class CursorLLM(AdapterMixin, FunctionCallingLLM):
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

    adapter_label: ClassVar[str] = "CursorLLM"
    call_kwargs: ClassVar[frozenset[str]] = _CALL_KWARGS
    adapter_log: ClassVar[logging.Logger] = log

    _binding: SessionBinding[CursorMessage] | None = PrivateAttr(default=None)
    _model_info: ModelInfo | None = PrivateAttr(default=None)
    _warned_ignored: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        """Wrap a given ``session`` in a binding that tracks what Cursor already holds, and say
        once if sampling parameters were set that Cursor does not have."""
        super().model_post_init(context)
        self._adapter_post_init()

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
        options = self._call_options(kwargs, stop=kwargs.get("stop"))
        converted = to_cursor_messages(messages)
        builder = ResponseBuilder(TurnRequest(model=options.model, messages=tuple(converted)))
        async with aclosing(self._turn_events(converted, options)) as events:
            async for event in events:
                response = builder.feed(event)
                if response is not None:
                    yield response
        if not builder.done:
            raise SessionError("the turn ended without a final event", code="stream_incomplete")

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

        return sync_stream(lambda: self._responses(messages, kwargs))

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
            kwargs["tool_choice"] = (
                normalize_tool_choice(tool_choice, names, required=tool_required) or "auto"
            )
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
                args = partial_args(args)
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
        return sync_stream(lambda: self._responses(messages, kwargs))
