"""Translation between LangChain messages and cursorpipe's transport-neutral messages and events.

Nothing here does I/O: LangChain messages become ``cursorpipe.ChatMessage`` objects, and
cursorpipe events become ``AIMessageChunk`` objects (folded by ``cursorpipe.TurnAccumulator``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cursorpipe import (
    ChatMessage as CursorMessage,
)
from cursorpipe import (
    ConfigurationError,
    ImagePart,
    TextPart,
    ToolCallDelta,
    ToolCallEvent,
    TurnRequest,
    Usage,
)
from cursorpipe import (
    ToolCall as CursorToolCall,
)
from cursorpipe.integration import EventTranslator, image_part
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.tool import (
    invalid_tool_call,
    tool_call,
    tool_call_chunk,
)
from langchain_core.utils.json import parse_partial_json

__all__ = [
    "PROVIDER",
    "ChunkBuilder",
    "message_text",
    "to_cursor_messages",
    "usage_metadata",
]

#: ``response_metadata["model_provider"]``; LangChain keys block translators on it.
PROVIDER = "cursor"


# ----------------------------------------------------------------------------------------------
# LangChain -> cursorpipe
# ----------------------------------------------------------------------------------------------
def _image(block: dict[str, Any], where: str) -> ImagePart:
    """An image content block (LangChain v0 or v1 shape) as a cursorpipe image part."""
    if block.get("type") == "image_url":
        ref = block.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
    else:
        data = block.get("base64") or (block.get("data") if block.get("source_type") == "base64" else None)
        url = f"data:{block.get('mime_type') or 'image/png'};base64,{data}" if data else block.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f"{where}: image blocks need base64 data or a URL (file ids are not supported by Cursor)",
            code="invalid_request",
        )
    try:
        return image_part(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}", code="invalid_request") from exc


def _user_parts(content: str | list[Any], where: str) -> tuple[TextPart | ImagePart, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[TextPart | ImagePart] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append(TextPart(block))
            continue
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(TextPart(str(block.get("text", ""))))
        elif kind in ("image", "image_url"):
            parts.append(_image(block, f"{where}.content[{i}]"))
        else:
            raise ConfigurationError(
                f"{where}.content[{i}]: content blocks of type {kind!r} are not supported "
                "(Cursor accepts text and images)",
                code="invalid_request",
            )
    return tuple(parts)


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (text blocks only; reasoning and tool blocks are dropped)."""
    if isinstance(message.content, str):
        return message.content
    out: list[str] = []
    for block in message.content:
        if isinstance(block, str):
            out.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            out.append(str(block.get("text", "")))
    return "".join(out)


def _tool_calls(message: AIMessage) -> tuple[CursorToolCall, ...]:
    return tuple(
        CursorToolCall(
            id=call.get("id") or f"call_{i}", name=call["name"], arguments=json.dumps(call.get("args", {}))
        )
        for i, call in enumerate(message.tool_calls)
    )


def _to_cursor(message: BaseMessage, where: str) -> CursorMessage:
    if isinstance(message, SystemMessage):
        return CursorMessage.of("system", message_text(message))
    if isinstance(message, HumanMessage):
        return CursorMessage("user", _user_parts(message.content, where))
    if isinstance(message, AIMessage):
        return CursorMessage("assistant", (TextPart(message_text(message)),), tool_calls=_tool_calls(message))
    if isinstance(message, ToolMessage):
        return CursorMessage("tool", (TextPart(message_text(message)),), tool_call_id=message.tool_call_id)
    if isinstance(message, FunctionMessage):
        return CursorMessage("tool", (TextPart(message_text(message)),), tool_call_id=message.name)
    if isinstance(message, ChatMessage):
        role = {"human": "user", "ai": "assistant", "developer": "system"}.get(message.role, message.role)
        if role not in ("system", "user", "assistant", "tool"):
            raise ConfigurationError(f"{where}: unsupported role {message.role!r}", code="invalid_request")
        if role == "user":
            return CursorMessage("user", _user_parts(message.content, where))
        return CursorMessage(role, (TextPart(message_text(message)),))  # type: ignore[arg-type]
    raise ConfigurationError(
        f"{where}: unsupported message type {type(message).__name__}", code="invalid_request"
    )


def to_cursor_messages(messages: Sequence[BaseMessage]) -> list[CursorMessage]:
    """LangChain messages as ``cursorpipe.ChatMessage`` objects.

    Raises ``cursorpipe.ConfigurationError`` naming the message for content Cursor cannot take.
    """
    out: list[CursorMessage] = []
    for i, message in enumerate(messages):
        converted = _to_cursor(message, f"messages[{i}]")
        if message.name and converted.role in ("user", "assistant", "system"):
            converted = CursorMessage(
                converted.role, converted.content, name=message.name, tool_calls=converted.tool_calls
            )
        out.append(converted)
    return out


# ----------------------------------------------------------------------------------------------
# cursorpipe -> LangChain
# ----------------------------------------------------------------------------------------------
def usage_metadata(usage: Usage) -> UsageMetadata:
    """cursorpipe ``Usage`` as LangChain ``UsageMetadata`` (cache and reasoning details included)."""
    meta = UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.cache_read_tokens or usage.cache_write_tokens:
        meta["input_token_details"] = InputTokenDetails(
            cache_read=usage.cache_read_tokens, cache_creation=usage.cache_write_tokens
        )
    if usage.reasoning_tokens:
        meta["output_token_details"] = OutputTokenDetails(reasoning=usage.reasoning_tokens)
    return meta


class ChunkBuilder(EventTranslator[AIMessageChunk]):
    """Turns one turn's cursorpipe events into ``AIMessageChunk`` objects.

    Text and thinking deltas become chunks as they arrive; the turn's end becomes one final chunk
    carrying usage (the only chunk that does, so aggregation never double-counts), the response
    metadata and ``chunk_position="last"``. The kit's ``EventTranslator`` folds the turn; this
    class adds LangChain's chunk shapes and indexing.
    """

    __slots__ = ("_block", "_kind", "_streamed_tools", "_tool_blocks", "extra_kwargs")

    def __init__(self, request: TurnRequest) -> None:
        super().__init__(request)
        self.extra_kwargs: dict[str, Any] = {}
        """``additional_kwargs`` of the final chunk (structured output failures)."""
        self._streamed_tools: set[int] = set()
        self._block = -1
        self._kind = ""
        self._tool_blocks: dict[int, int] = {}

    def _next_block(self, kind: str) -> None:
        # Mirrors BaseChatModel's v1 content-block numbering (a new index whenever the block type
        # changes), so a tool call's chunk index never collides with the reasoning or text block
        # when LangChain merges content blocks by index (as providers with content-block streams
        # index their tool calls).
        if kind != self._kind:
            self._kind = kind
            self._block += 1

    def tool_index(self, call_index: int) -> int:
        """The ``tool_call_chunk`` index of the turn's ``call_index``-th tool call."""
        if call_index not in self._tool_blocks:
            self._kind = f"tool_call:{call_index}"
            self._block += 1
            self._tool_blocks[call_index] = self._block
        return self._tool_blocks[call_index]

    def on_text(self, text: str) -> AIMessageChunk:
        self._next_block("text")
        return AIMessageChunk(content=text)

    def on_thinking(self, text: str) -> AIMessageChunk:
        self._next_block("reasoning")
        return AIMessageChunk(content="", additional_kwargs={"reasoning_content": text})

    def on_tool_delta(self, event: ToolCallDelta) -> AIMessageChunk:
        self._streamed_tools.add(event.index)
        return self._tool_chunk(event.name, event.arguments_delta, event.id, event.index)

    def on_tool_call(self, event: ToolCallEvent) -> AIMessageChunk | None:
        if event.index in self._streamed_tools:
            return None  # already delivered as deltas
        return self._tool_chunk(event.call.name, event.call.arguments, event.call.id, event.index)

    def _tool_chunk(self, name: str | None, args: str, id_: str | None, index: int) -> AIMessageChunk:
        chunk = tool_call_chunk(name=name, args=args, id=id_, index=self.tool_index(index))
        return AIMessageChunk(content="", tool_call_chunks=[chunk])

    def tool_calls(self) -> tuple[list[ToolCall], list[InvalidToolCall]]:
        """The turn's tool calls as LangChain parses them (partial JSON tolerated; arguments that
        are not an object make the call invalid) and the calls the core flagged invalid, each
        with the core's reason."""
        calls: list[ToolCall] = []
        invalid: list[InvalidToolCall] = []
        for event in self.acc.tool_call_events:
            call = event.call
            try:
                args = parse_partial_json(call.arguments) if call.arguments else {}
            except ValueError:  # json.JSONDecodeError is a ValueError
                args = None
            if isinstance(args, dict):
                calls.append(tool_call(name=call.name, args=args, id=call.id))
            else:
                invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error=None))
        invalid.extend(
            invalid_tool_call(name=bad.call.name, args=bad.call.arguments, id=bad.call.id, error=bad.error)
            for bad in self.acc.invalid_tool_calls
        )
        return calls, invalid

    def _metadata(self, usage: Usage) -> dict[str, Any]:
        info = self.acc.info
        metadata: dict[str, Any] = {
            "model_name": self.model_name,
            "finish_reason": self.finish_reason,
            "model_provider": PROVIDER,
        }
        optional: dict[str, Any] = {
            "usage_estimated": usage.estimated,
            "transport": info.transport if info is not None else None,
            "session_id": info.session_id if info is not None else None,
            "fallback_from": list(info.fallback_from) if info is not None else None,
            "notices": list(self.acc.notices),
            "tool_calls_emulated": self.tools_emulated,
        }
        metadata.update((k, v) for k, v in optional.items() if v)
        if usage.cost_cents is not None:
            metadata["cost_cents"] = usage.cost_cents
        return metadata

    def on_end(self) -> AIMessageChunk:
        """The last chunk: usage, response metadata and ``chunk_position="last"``."""
        usage = self.usage()
        extra = dict(self.extra_kwargs)
        if self.acc.parsed is not None:
            extra["parsed"] = self.acc.parsed
        errors = {self.tool_index(bad.index): bad.error for bad in self.acc.invalid_tool_calls if bad.error}
        if errors:
            # Why the tool call at a chunk index is invalid (an emulated call that did not parse or
            # names an unknown tool): it must end up in invalid_tool_calls even when its arguments
            # happen to be valid JSON.
            extra["tool_errors"] = errors
        return AIMessageChunk(
            content="",
            additional_kwargs=extra,
            usage_metadata=usage_metadata(usage),
            response_metadata=self._metadata(usage),
            chunk_position="last",
        )
