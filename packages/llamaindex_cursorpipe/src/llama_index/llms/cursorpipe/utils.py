"""Translation between LlamaIndex chat messages and cursorpipe's messages and events.

Nothing here does I/O: LlamaIndex messages become ``cursorpipe.ChatMessage`` objects, and a turn's
cursorpipe events (folded by ``cursorpipe.TurnAccumulator``) become cumulative ``ChatResponse``
objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.utils import parse_partial_json

from cursorpipe import ChatMessage as CursorMessage
from cursorpipe import (
    ConfigurationError,
    ImagePart,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    TurnRequest,
    Usage,
)
from cursorpipe.integration import EventTranslator, image_part

__all__ = ["ResponseBuilder", "message_text", "partial_args", "to_cursor_messages"]

_ROLES: dict[MessageRole, Any] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


# ----------------------------------------------------------------------------------------------
# LlamaIndex -> cursorpipe
# ----------------------------------------------------------------------------------------------
def message_text(message: ChatMessage) -> str:
    """The text blocks of a message, joined."""
    return "".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def _user_parts(message: ChatMessage, where: str) -> tuple[TextPart | ImagePart, ...]:
    parts: list[TextPart | ImagePart] = []
    for i, block in enumerate(message.blocks):
        if isinstance(block, TextBlock):
            parts.append(TextPart(block.text))
        elif isinstance(block, ImageBlock):
            if block.url is not None and block.image is None and block.path is None:
                url = str(block.url)  # a remote image is passed on, never downloaded here
            else:
                url = block.inline_url()
            parts.append(image_part(url))
        else:
            raise ConfigurationError(
                f"{where}.blocks[{i}]: {block.block_type!r} blocks are not supported "
                "(Cursor accepts text and images)",
                code="invalid_request",
            )
    return tuple(parts)


def _call_of(raw: Any, n: int) -> ToolCall:
    """An OpenAI-shaped tool call (as llama-index's OpenAI LLM keeps them in
    ``additional_kwargs["tool_calls"]``) as a cursorpipe ``ToolCall``."""
    fn = raw.get("function", raw) if isinstance(raw, dict) else None
    if not isinstance(fn, dict):
        raise ConfigurationError(f"tool_calls[{n}] must be an object with a function", code="invalid_request")
    args = fn.get("arguments", "{}")
    return ToolCall(
        id=str(raw.get("id", "")),
        name=str(fn.get("name", "")),
        arguments=args if isinstance(args, str) else json.dumps(args),
    )


def _block_call(block: ToolCallBlock, n: int) -> ToolCall:
    """A ``ToolCallBlock`` (how current llama-index-core records calls) as a cursorpipe call."""
    args = block.tool_kwargs if isinstance(block.tool_kwargs, str) else json.dumps(block.tool_kwargs)
    return ToolCall(id=block.tool_call_id or f"call_{n}", name=block.tool_name, arguments=args)


def _assistant_calls(message: ChatMessage) -> tuple[ToolCall, ...]:
    calls = message.additional_kwargs.get("tool_calls")
    if isinstance(calls, list) and calls:
        return tuple(_call_of(c, n) for n, c in enumerate(calls))
    blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    return tuple(_block_call(b, n) for n, b in enumerate(blocks))


def to_cursor_messages(messages: Sequence[ChatMessage]) -> list[CursorMessage]:
    """LlamaIndex chat messages as ``cursorpipe.ChatMessage`` objects.

    Raises ``cursorpipe.ConfigurationError`` naming the message for content Cursor cannot take.
    """
    out: list[CursorMessage] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = _ROLES.get(message.role)
        if role is None:
            raise ConfigurationError(f"{where}: unsupported role {message.role!r}", code="invalid_request")
        content = _user_parts(message, where) if role == "user" else (TextPart(message_text(message)),)
        name = message.additional_kwargs.get("name")
        out.append(
            CursorMessage(
                role,
                content,
                name=name if isinstance(name, str) and name and role != "tool" else None,
                tool_calls=_assistant_calls(message) if role == "assistant" else (),
                tool_call_id=str(message.additional_kwargs.get("tool_call_id", ""))
                if role == "tool"
                else None,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# cursorpipe -> LlamaIndex
# ----------------------------------------------------------------------------------------------
def _parse_args(text: str) -> dict[str, Any] | None:
    """Tool arguments as a dict (``None`` while they are incomplete or not a JSON object)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def partial_args(text: str) -> dict[str, Any]:
    """Arguments of a call still streaming: what LlamaIndex's partial-JSON parser recovers."""
    try:
        value = parse_partial_json(text)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return {}
    return value if isinstance(value, dict) else {}


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
class _PendingCall:
    """A tool call still streaming (``ToolCallDelta`` pieces, before its ``ToolCallEvent``)."""

    id: str = ""
    name: str = ""
    arguments: str = ""


class ResponseBuilder(EventTranslator[ChatResponse]):
    """Turns one turn's events into cumulative ``ChatResponse`` objects. The kit's
    ``EventTranslator`` folds the turn; this class shapes LlamaIndex's responses."""

    __slots__ = ("done", "pending")

    def __init__(self, request: TurnRequest) -> None:
        super().__init__(request)
        self.pending: dict[int, _PendingCall] = {}
        self.done = False

    def message(self) -> ChatMessage:
        """The cumulative assistant message: thinking, text, then one ``ToolCallBlock`` per valid
        tool call, mirrored in ``additional_kwargs["tool_calls"]`` (OpenAI shape, as
        llama-index's OpenAI LLM keeps them); calls the core flagged invalid go to
        ``additional_kwargs["invalid_tool_calls"]`` with the reason, never to a tool."""
        acc = self.acc
        blocks: list[Any] = []
        if acc.thinking:
            blocks.append(ThinkingBlock(content=acc.thinking))
        blocks.append(TextBlock(text=acc.text))
        calls = {i: _PendingCall(p.id, p.name, p.arguments) for i, p in self.pending.items()}
        for done in acc.tool_call_events:
            calls[done.index] = _PendingCall(done.call.id, done.call.name, done.call.arguments)
        valid = [c for _, c in sorted(calls.items())]
        for call in valid:
            parsed = _parse_args(call.arguments)
            blocks.append(
                ToolCallBlock(
                    tool_call_id=call.id,
                    tool_name=call.name,
                    tool_kwargs=parsed if parsed is not None else call.arguments,
                )
            )
        extra: dict[str, Any] = {}
        if valid:
            extra["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in valid
            ]
        if acc.invalid_tool_calls:
            extra["invalid_tool_calls"] = [
                {"id": e.call.id, "name": e.call.name, "arguments": e.call.arguments, "error": e.error}
                for e in acc.invalid_tool_calls
            ]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)

    def on_text(self, text: str) -> ChatResponse:
        return ChatResponse(message=self.message(), delta=text)

    def on_thinking(self, text: str) -> ChatResponse:
        # LlamaIndex agents read reasoning deltas from additional_kwargs["thinking_delta"].
        return ChatResponse(message=self.message(), delta="", additional_kwargs={"thinking_delta": text})

    def on_tool_delta(self, event: ToolCallDelta) -> ChatResponse:
        pending = self.pending.setdefault(event.index, _PendingCall())
        pending.id = pending.id or (event.id or "")
        pending.name = pending.name or (event.name or "")
        pending.arguments += event.arguments_delta
        return ChatResponse(message=self.message(), delta="")

    def on_tool_call(self, event: ToolCallEvent) -> ChatResponse:
        # The complete call (folded by the accumulator) is authoritative over the deltas.
        self.pending.pop(event.index, None)
        return ChatResponse(message=self.message(), delta="")

    def on_end(self) -> ChatResponse:
        """The last response: usage (reported or estimated) and the turn's metadata in ``raw``."""
        self.done = True
        usage = self.usage()
        info = self.acc.info
        raw: dict[str, Any] = {
            "model": self.model_name,
            "finish_reason": self.finish_reason,
            "usage": _usage_dict(usage),
            "usage_estimated": usage.estimated,
        }
        optional: dict[str, Any] = {
            "transport": info.transport if info is not None else None,
            "session_id": info.session_id if info is not None else None,
            "notices": list(self.acc.notices),
            "thinking": self.acc.thinking,
            # Parsed from text: the transport has no tool channel.
            "tool_calls_emulated": self.tools_emulated,
        }
        raw.update((k, v) for k, v in optional.items() if v)
        extra = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "usage_estimated": usage.estimated,
            "model": raw["model"],
            "finish_reason": raw["finish_reason"],
        }
        return ChatResponse(message=self.message(), delta="", raw=raw, additional_kwargs=extra)
