"""Translation between LangChain messages and cursorpipe's transport-neutral messages and events.

Nothing here does I/O: LangChain messages become OpenAI-style dicts that
``cursorpipe.CursorClient`` validates, and cursorpipe events become ``AIMessageChunk`` objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cursorpipe import (
    ConfigurationError,
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    Usage,
    UsageEvent,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.tool import tool_call_chunk

from ._tokens import count_tokens

__all__ = [
    "PROVIDER",
    "ChunkBuilder",
    "message_text",
    "to_cursor_messages",
    "usage_metadata",
]

#: ``response_metadata["model_provider"]``; LangChain keys block translators on it.
PROVIDER = "cursor"

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


# ----------------------------------------------------------------------------------------------
# LangChain -> cursorpipe
# ----------------------------------------------------------------------------------------------
def _image_url(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An image content block (LangChain v0 or v1 shape) as an OpenAI ``image_url`` part."""
    if block.get("type") == "image_url":
        return {"type": "image_url", "image_url": block.get("image_url")}
    data = block.get("base64") or (block.get("data") if block.get("source_type") == "base64" else None)
    if isinstance(data, str) and data:
        mime = block.get("mime_type") or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
    url = block.get("url")
    if isinstance(url, str) and url:
        return {"type": "image_url", "image_url": {"url": url}}
    raise ConfigurationError(
        f"{where}: image blocks need base64 data or a URL (file ids are not supported by Cursor)",
        code="invalid_request",
    )


def _user_parts(content: str | list[Any], where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
            continue
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind in ("image", "image_url"):
            parts.append(_image_url(block, f"{where}.content[{i}]"))
        else:
            raise ConfigurationError(
                f"{where}.content[{i}]: content blocks of type {kind!r} are not supported "
                "(Cursor accepts text and images)",
                code="invalid_request",
            )
    return parts


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


def _tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id") or f"call_{i}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args", {}))},
        }
        for i, call in enumerate(message.tool_calls)
    ]


def to_cursor_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI-style dicts for ``CursorClient.events``.

    Raises ``cursorpipe.ConfigurationError`` naming the message for content Cursor cannot take.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        entry: dict[str, Any]
        if isinstance(message, SystemMessage):
            entry = {"role": "system", "content": message_text(message)}
        elif isinstance(message, HumanMessage):
            entry = {"role": "user", "content": _user_parts(message.content, where)}
        elif isinstance(message, AIMessage):
            entry = {"role": "assistant", "content": message_text(message)}
            if message.tool_calls:
                entry["tool_calls"] = _tool_calls(message)
        elif isinstance(message, ToolMessage):
            entry = {"role": "tool", "content": message_text(message), "tool_call_id": message.tool_call_id}
        elif isinstance(message, FunctionMessage):
            entry = {"role": "tool", "content": message_text(message), "tool_call_id": message.name}
        elif isinstance(message, ChatMessage):
            role = {"human": "user", "ai": "assistant"}.get(message.role, message.role)
            content = _user_parts(message.content, where) if role == "user" else message_text(message)
            entry = {"role": role, "content": content}
        else:
            raise ConfigurationError(
                f"{where}: unsupported message type {type(message).__name__}", code="invalid_request"
            )
        if message.name and entry["role"] in ("user", "assistant", "system"):
            entry["name"] = message.name
        out.append(entry)
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


@dataclass
class ChunkBuilder:
    """Turns one turn's cursorpipe events into ``AIMessageChunk`` objects.

    Text and thinking deltas become chunks as they arrive; the turn's end becomes one final chunk
    carrying usage (the only chunk that does, so aggregation never double-counts), the response
    metadata and ``chunk_position="last"``.
    """

    model: str
    input_text: str
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    """``additional_kwargs`` of the final chunk (structured output: ``parsed`` and failures)."""
    served_model: str | None = None
    session_id: str | None = None
    transport: str | None = None
    fallback_from: tuple[str, ...] = ()
    usage: Usage | None = None
    text: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    tool_errors: dict[int, str] = field(default_factory=dict)
    tools_emulated: bool = False
    """Some tool call was parsed from the model's text (no native tool channel)."""
    """Why the tool call at an index is invalid (``ToolCallEvent.error``), by index."""
    _streamed_tools: set[int] = field(default_factory=set)
    _block: int = -1
    _kind: str = ""
    _tool_blocks: dict[int, int] = field(default_factory=dict)

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

    def feed(self, event: Event) -> AIMessageChunk | None:
        """The chunk for ``event`` (None for events that only update state)."""
        if isinstance(event, TextDelta):
            if event.notice:
                # connect.md §7: notices (quota, model substitution) are not model output.
                self.notices.append(event.text)
                return None
            if not event.text:
                return None
            self.text.append(event.text)
            self._next_block("text")
            return AIMessageChunk(content=event.text)
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return None
            self._next_block("reasoning")
            return AIMessageChunk(content="", additional_kwargs={"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            self._streamed_tools.add(event.index)
            return AIMessageChunk(
                content="",
                tool_call_chunks=[
                    tool_call_chunk(
                        name=event.name,
                        args=event.arguments_delta,
                        id=event.id,
                        index=self.tool_index(event.index),
                    )
                ],
            )
        if isinstance(event, ToolCallEvent):
            self.tools_emulated = self.tools_emulated or event.emulated
            if event.error is not None:
                # An emulated call that did not parse or names an unknown tool: it must end up in
                # invalid_tool_calls even when its arguments happen to be valid JSON.
                self.tool_errors[self.tool_index(event.index)] = event.error
            if event.index in self._streamed_tools:
                return None  # already delivered as deltas
            call = event.call
            return AIMessageChunk(
                content="",
                tool_call_chunks=[
                    tool_call_chunk(
                        name=call.name, args=call.arguments, id=call.id, index=self.tool_index(event.index)
                    )
                ],
            )
        if isinstance(event, TransportInfo):
            self.transport = event.transport
            self.served_model = event.model or self.served_model
            self.session_id = event.session_id or self.session_id
            self.fallback_from = event.fallback_from
            return None
        if isinstance(event, UsageEvent):
            self.usage = event.usage
            return None
        if isinstance(event, TurnEnd):
            return self.final(event.stop_reason, event.usage or self.usage)
        return None

    def final(self, stop_reason: str, usage: Usage | None) -> AIMessageChunk:
        """The last chunk: usage, response metadata and ``chunk_position="last"``."""
        if usage is None:
            usage = Usage(
                input_tokens=count_tokens(self.input_text),
                output_tokens=count_tokens("".join(self.text)),
                estimated=True,
            )
        metadata: dict[str, Any] = {
            "model_name": self.served_model or self.model,
            "finish_reason": _FINISH.get(stop_reason, stop_reason),
            "model_provider": PROVIDER,
            **self.extra_metadata,
        }
        if usage.estimated:
            metadata["usage_estimated"] = True
        if self.transport:
            metadata["transport"] = self.transport
        if self.session_id:
            metadata["session_id"] = self.session_id
        if self.fallback_from:
            metadata["fallback_from"] = list(self.fallback_from)
        if self.notices:
            metadata["notices"] = list(self.notices)
        if self.tools_emulated:
            metadata["tool_calls_emulated"] = True
        if usage.cost_cents is not None:
            metadata["cost_cents"] = usage.cost_cents
        extra = dict(self.extra_kwargs)
        if self.tool_errors:
            extra["tool_errors"] = dict(self.tool_errors)
        return AIMessageChunk(
            content="",
            additional_kwargs=extra,
            usage_metadata=usage_metadata(usage),
            response_metadata=metadata,
            chunk_position="last",
        )
