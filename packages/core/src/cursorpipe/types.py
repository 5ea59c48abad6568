"""Transport-neutral data: messages, requests, stream events, usage, results and model info.

Transports translate their wire messages into these types at their edge; nothing protocol-specific
(protobuf objects, JSON-RPC dicts, CLI lines) ever leaves a transport.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._constants import CHARS_PER_TOKEN_ESTIMATE
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._structured import ResponseFormat

__all__ = [
    "ChatMessage",
    "CompletionResult",
    "Event",
    "ImagePart",
    "ModelInfo",
    "ParsedOutput",
    "Role",
    "StopReason",
    "TextDelta",
    "TextPart",
    "ThinkingDelta",
    "TokenCountDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEvent",
    "ToolHandler",
    "ToolSpec",
    "TransportInfo",
    "TurnEnd",
    "TurnRequest",
    "Usage",
    "UsageEvent",
    "estimate_tokens",
    "normalize_messages",
]

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "tool_calls", "cancelled", "content_filter", "error"]


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextPart:
    """A piece of text inside a message."""

    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inside a user message: inline bytes (from a data URL) or a remote URL."""

    mime_type: str = "image/png"
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call a tool. ``arguments`` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """``arguments`` as a dict; raises ``ValueError`` when it is not a JSON object."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError("tool call arguments are not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation in a transport-neutral form."""

    role: Role
    content: tuple[TextPart | ImagePart, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The image parts."""
        return tuple(p for p in self.content if isinstance(p, ImagePart))

    @classmethod
    def of(cls, role: Role, text: str) -> ChatMessage:
        """A plain-text message."""
        return cls(role=role, content=(TextPart(text),))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A caller-defined function the model may call (OpenAI ``tools[].function`` shape)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


ToolHandler: TypeAlias = Callable[[ToolCall], Awaitable[str]]
"""A caller's tool executor: gets the model's :class:`ToolCall`, returns the result text. Passed as
``tool_handler=`` it makes a turn *stateful*: results go back to the model inside the same turn.
An exception it raises becomes an error result carrying the (redacted) exception text."""


_ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool", "developer"})


def _parse_image_url(url: str) -> ImagePart:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0] or "image/png"
        if ";base64" not in header:
            raise ConfigurationError("image data URLs must be base64-encoded", code="invalid_request")
        try:
            return ImagePart(mime_type=mime, data=base64.b64decode(payload, validate=True))
        except (ValueError, TypeError) as exc:
            raise ConfigurationError("image data URL is not valid base64", code="invalid_request") from exc
    if url.startswith(("http://", "https://")):
        return ImagePart(url=url)
    raise ConfigurationError("image_url must be a data: URL or an http(s) URL", code="invalid_request")


def _parts(content: Any, index: int) -> tuple[TextPart | ImagePart, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, Sequence):
        raise ConfigurationError(
            f"messages[{index}].content must be a string or a list of parts", code="invalid_request"
        )
    parts: list[TextPart | ImagePart] = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            parts.append(TextPart(part))
            continue
        if not isinstance(part, Mapping):
            raise ConfigurationError(
                f"messages[{index}].content[{j}] must be an object", code="invalid_request"
            )
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(TextPart(str(part.get("text", ""))))
        elif kind in ("image_url", "input_image"):
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, Mapping) else ref
            if not isinstance(url, str):
                raise ConfigurationError(
                    f"messages[{index}].content[{j}].image_url.url must be a string", code="invalid_request"
                )
            parts.append(_parse_image_url(url))
        elif kind == "image" and isinstance(part.get("data"), (bytes, str)):
            raw = part["data"]
            try:
                data = raw if isinstance(raw, bytes) else base64.b64decode(raw, validate=True)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"messages[{index}].content[{j}].data is not valid base64", code="invalid_request"
                ) from exc
            parts.append(ImagePart(mime_type=str(part.get("mime_type", "image/png")), data=data))
        else:
            raise ConfigurationError(
                f"messages[{index}].content[{j}] has unsupported type {kind!r}", code="invalid_request"
            )
    return tuple(parts)


def _tool_calls(raw: Any, index: int) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise ConfigurationError(f"messages[{index}].tool_calls must be a list", code="invalid_request")
    calls = []
    for j, item in enumerate(raw):
        fn = item.get("function", item) if isinstance(item, Mapping) else None
        if not isinstance(fn, Mapping):
            raise ConfigurationError(
                f"messages[{index}].tool_calls[{j}] must be an object with a function", code="invalid_request"
            )
        args = fn.get("arguments", "{}")
        calls.append(
            ToolCall(
                id=str(item.get("id", "")),
                name=str(fn.get("name", "")),
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
        )
    return tuple(calls)


def normalize_messages(messages: Sequence[Mapping[str, Any] | ChatMessage]) -> list[ChatMessage]:
    """Turn OpenAI-style message dicts (or ``ChatMessage``) into ``ChatMessage`` objects.

    ``developer`` is treated as ``system``. Raises ``ConfigurationError`` naming the bad message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError("messages must be a list of message objects", code="invalid_request")
    out: list[ChatMessage] = []
    for i, msg in enumerate(messages):
        if isinstance(msg, ChatMessage):
            out.append(msg)
            continue
        if not isinstance(msg, Mapping):
            raise ConfigurationError(f"messages[{i}] must be an object", code="invalid_request")
        role = msg.get("role")
        if role not in _ROLES:
            raise ConfigurationError(
                f"messages[{i}].role must be one of system, user, assistant, tool (got {role!r})",
                code="invalid_request",
            )
        out.append(
            ChatMessage(
                role="system" if role == "developer" else role,
                content=_parts(msg.get("content"), i),
                name=msg.get("name") if isinstance(msg.get("name"), str) else None,
                tool_calls=_tool_calls(msg.get("tool_calls"), i),
                tool_call_id=msg.get("tool_call_id") if isinstance(msg.get("tool_call_id"), str) else None,
            )
        )
    if not out:
        raise ConfigurationError("messages must not be empty", code="invalid_request")
    return out


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn as the client hands it to a transport.

    For a stateless call ``messages`` is the whole conversation; inside a session it holds only the
    new user message (the transport's session keeps the rest).
    """

    model: str
    messages: tuple[ChatMessage, ...]
    mode: Literal["ask", "plan"] = "ask"
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    request_id: str | None = None
    tool_handler: ToolHandler | None = None
    """Answers the model's native tool calls inside the turn (stateful tools); ``None`` = the turn
    ends at the model's tool calls (``TurnEnd.stop_reason == "tool_calls"``, OpenAI style)."""
    tool_result_timeout_s: float | None = None
    """Bound on one ``tool_handler`` call (``None`` = the transport's default)."""
    reasoning_effort: str | None = None
    """OpenAI-style effort (``minimal``/``low``/``medium``/``high``/...), mapped by the transport to
    the model's own effort parameter (connect: ``RequestedModel.parameters``); ``None`` = the
    model's default."""
    run_id: str | None = None
    """The id of this logical turn, kept by every retry of it (connect: ``run_id`` and
    ``x-original-request-id``, live-dialect.md row 17); ``None`` = the transport makes one."""
    attempt: int = 0
    """0 for the first try of ``run_id``, then 1, 2...: a retry sends a new ``x-request-id`` only."""
    response_format: ResponseFormat | None = None
    """The parsed ``response_format`` (its instructions are already in ``messages``): what the
    validation stage checks the answer against; transports ignore it."""

    @property
    def system(self) -> str:
        """All system messages joined by blank lines."""
        return "\n\n".join(m.text for m in self.messages if m.role == "system")

    def with_messages(self, messages: Sequence[ChatMessage]) -> TurnRequest:
        """A copy with other messages."""
        return replace(self, messages=tuple(messages))


# ----------------------------------------------------------------------------------------------
# Usage
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one turn.

    ``input_tokens`` is every prompt token, as Cursor reports it: it already **includes**
    ``cache_read_tokens`` and ``cache_write_tokens`` (live-dialect.md row 13), which are details of
    it, never to be added on top. ``total_tokens`` is input + output (OpenAI's convention;
    reasoning tokens are a subset of output tokens, connect.md §7). ``estimated`` is True when the
    transport reported no counts and these are character-based estimates.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cost_cents: float | None = None

    @property
    def total_tokens(self) -> int:
        """input + output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
            cost_cents=(
                None
                if self.cost_cents is None and other.cost_cents is None
                else (self.cost_cents or 0.0) + (other.cost_cents or 0.0)
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict including ``total_tokens``."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated": self.estimated,
            "cost_cents": self.cost_cents,
        }


def estimate_tokens(text: str) -> int:
    """Offline token estimate (about four characters per token; never zero for non-empty text)."""
    if not text:
        return 0
    return max(1, round(len(text) / CHARS_PER_TOKEN_ESTIMATE))


# ----------------------------------------------------------------------------------------------
# Stream events
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the model's answer. ``notice`` marks server notices (quota, model substitution)
    that are not model output (connect.md §7)."""

    text: str
    notice: bool = False
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the model's reasoning."""

    text: str
    type: Literal["thinking"] = "thinking"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call while it streams: id and name on the first fragment of an index,
    then argument text fragments with the same index."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """A complete tool call. ``emulated`` is True where the transport has no native tool channel
    and the call was parsed from the model's text."""

    call: ToolCall
    index: int = 0
    emulated: bool = False
    error: str | None = None
    """Set when the call could not be parsed (an *invalid* tool call: ``call.arguments`` holds the
    raw text the model produced)."""
    type: Literal["tool_call"] = "tool_call"
    handled: bool = False
    """True when a ``tool_handler`` answers this call inside the same turn (stateful tools): the
    call is informational and is not part of ``CompletionResult.tool_calls``."""


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Token usage of the turn (sent once, before ``TurnEnd``)."""

    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class TokenCountDelta:
    """Cursor's running count of output tokens (connect's ``token_delta``): ``tokens`` more since
    the previous count. Pipeline-internal: :class:`~cursorpipe.CursorClient` uses it to enforce
    ``max_tokens`` and never yields it to callers."""

    tokens: int
    type: Literal["token_count"] = "token_count"


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """Which transport serves the turn, which model actually answered, and fallbacks taken."""

    transport: str
    model: str | None = None
    session_id: str | None = None
    fallback_from: tuple[str, ...] = ()
    type: Literal["info"] = "info"


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The last event of every successful turn."""

    stop_reason: StopReason = "stop"
    usage: Usage | None = None
    type: Literal["end"] = "end"


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """The validated JSON value of a turn that asked for a ``response_format``: sent once, before
    ``TurnEnd``, by the structured-output stage after the answer text (which it repaired once if it
    was invalid). Consumers that render the answer as JSON use ``value``, not the text, since the
    model may have wrapped the JSON in prose or code fences."""

    value: Any
    type: Literal["parsed"] = "parsed"


Event: TypeAlias = (
    TextDelta
    | ThinkingDelta
    | ToolCallDelta
    | ToolCallEvent
    | UsageEvent
    | TransportInfo
    | TurnEnd
    | TokenCountDelta
    | ParsedOutput
)


# ----------------------------------------------------------------------------------------------
# Results and models
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompletionResult:
    """The outcome of one complete turn."""

    text: str
    model: str
    session_id: str | None
    stop_reason: StopReason
    duration_ms: float
    usage: Usage = field(default_factory=Usage)
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    invalid_tool_calls: tuple[ToolCallEvent, ...] = ()
    parsed: Any = None
    """The validated JSON value when a ``response_format`` was requested."""
    transport: str = ""
    fallback_from: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the account can use."""

    id: str
    display_name: str = ""
    aliases: tuple[str, ...] = ()
    context_window: int | None = None
    max_output_tokens: int | None = None
    supports_thinking: bool | None = None
    supports_images: bool | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    owned_by: str = "cursor"

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this model's id or one of its aliases (case-insensitive)."""
        low = name.lower()
        return low == self.id.lower() or any(low == a.lower() for a in self.aliases)
