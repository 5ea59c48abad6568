"""Validating an Anthropic Messages request into cursorpipe's transport-neutral types.

Every check answers a 400 naming the field (rendered in Anthropic's error shape by the route), and
the field policy is the OpenAI routes' one: a field cursorpipe cannot honour is accepted and listed
in the ``x-cursorpipe-ignored-params`` response header (strict mode refuses it). The mapping is in
docs/anthropic.md §2.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...types import ChatMessage, ImagePart, TextPart, ToolCall, estimate_tokens
from .._errors import APIError
from .._requests import TurnSpec, _bad, _policy, _tool_choice, _tools, _validate

__all__ = ["MessagesParams", "count_tokens", "effort_for", "parse_messages"]

#: Anthropic's sampling knobs: validated, honoured by no transport (Cursor has none), so listed as
#: ignored when set, as the OpenAI routes list ``temperature``/``top_p``/``seed``.
_SAMPLING = ("temperature", "top_p", "top_k")
#: Anthropic's ``output_config.effort`` names -> OpenAI-style effort (``max`` is Cursor's top level,
#: which the transport's mapping reaches through ``xhigh``).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    user_id: str | None = None


class _MessagesBody(BaseModel):
    # strict: "1" is not a number and true is not an int (wrong types are 400s, not coercions).
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Any] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[Any] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    metadata: _Metadata | None = None
    # Checked by hand below so each error names its exact field.
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None
    output_config: Any = None
    output_format: Any = None  # the structured-outputs beta's name for output_config.format


class _CountBody(BaseModel):
    """``POST /v1/messages/count_tokens``: the prompt fields of a Messages request."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Any] = Field(min_length=1)
    system: str | list[Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None


@dataclass(frozen=True, slots=True)
class MessagesParams(TurnSpec):
    """A validated Messages request in cursorpipe's terms: what the shared turn loop runs, plus
    the stop sequences the route applies itself (``stop`` stays empty, see ``_stops.py``)."""

    stop_sequences: tuple[str, ...] = ()


def parse_messages(body: dict[str, Any], *, strict: bool) -> MessagesParams:
    """Validate a Messages body (see the module docstring for the field policy)."""
    parsed: _MessagesBody = _validate(_MessagesBody, body)
    tools = _anthropic_tools(parsed.tools)
    choice, parallel = _anthropic_tool_choice(parsed.tool_choice, tools)
    effort = effort_for(parsed.thinking, parsed.output_config, max_tokens=parsed.max_tokens)
    sampling = {name: True for name in _SAMPLING if getattr(parsed, name) is not None}
    ignored = _policy({**(parsed.model_extra or {}), **sampling}, strict)
    if parsed.metadata is not None:
        ignored += _policy(parsed.metadata.model_extra, strict, "metadata.")
    if isinstance(parsed.output_config, dict):
        extra = {k: v for k, v in parsed.output_config.items() if k not in ("effort", "format")}
        ignored += _policy(extra, strict, "output_config.")
    stops = tuple(parsed.stop_sequences or ())
    for i, stop in enumerate(stops):
        if not stop:
            raise _bad(f"stop_sequences[{i}]", f"stop_sequences[{i}] must not be empty.")
    return MessagesParams(
        model=parsed.model.strip(),
        messages=[*_system(parsed.system), *_conversation(parsed.messages)],
        max_tokens=parsed.max_tokens,
        stream=bool(parsed.stream),
        stop_sequences=stops,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning_effort=effort,
        response_format=_output_format(parsed.output_config, parsed.output_format),
        user=parsed.metadata.user_id if parsed.metadata is not None else None,
        ignored=ignored,
    )


def count_tokens(body: dict[str, Any]) -> int:
    """An estimate of the prompt tokens a Messages body would use (docs/anthropic.md §6): the same
    four-characters-per-token rule as every other cursorpipe estimate, over the system text, the
    messages' text and tool calls, and the tool definitions. Images count as nothing (Cursor
    reports no per-image figure to calibrate with)."""
    parsed: _CountBody = _validate(_CountBody, body)
    tools = _anthropic_tools(parsed.tools)
    _anthropic_tool_choice(parsed.tool_choice, tools)
    messages = [*_system(parsed.system), *_conversation(parsed.messages)]
    text = "".join(m.text + "".join(c.name + c.arguments for c in m.tool_calls) for m in messages)
    text += "".join(json.dumps(t["function"], ensure_ascii=False, sort_keys=True) for t in tools)
    return max(1, estimate_tokens(text))


# ----------------------------------------------------------------------------------------------
# system and messages
# ----------------------------------------------------------------------------------------------
def _objects(items: list[Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each item with its param name (``prefix[i]``); an item that is no object is a 400 naming it."""
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, f"{where} must be an object.")
        yield where, item


def _text_blocks(raw: list[Any], prefix: str) -> str:
    """The text of a list of ``text`` blocks (``system``)."""
    texts: list[str] = []
    for where, block in _objects(raw, prefix):
        if block.get("type") != "text":
            raise _bad(f"{where}.type", f"{where} must be a text block.")
        texts.append(_string(block, "text", where))
    return "\n\n".join(texts)


def _system(raw: str | list[Any] | None) -> list[ChatMessage]:
    """Anthropic's top-level ``system`` as one system message (blocks joined by a blank line;
    ``cache_control`` on them is accepted and has no effect)."""
    if raw is None:
        return []
    text = raw if isinstance(raw, str) else _text_blocks(raw, "system")
    return [ChatMessage.of("system", text)] if text else []


def _string(block: Mapping[str, Any], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise _bad(f"{where}.{key}", f"{where}.{key} must be a string.")
    return value


def _image(block: Mapping[str, Any], where: str) -> ImagePart:
    """An ``image`` block: ``{"type": "base64", "media_type", "data"}`` or ``{"type": "url", "url"}``."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{where}.source", f"{where}.source must be an object.")
    kind = source.get("type")
    if kind == "url":
        url = _string(source, "url", f"{where}.source")
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{where}.source.url", f"{where}.source.url must be an http(s) URL.")
        return ImagePart(url=url)
    if kind != "base64":
        raise _bad(
            f"{where}.source.type",
            f"{where}.source.type must be 'base64' or 'url' (got {kind!r}; file sources need "
            "Anthropic's Files API, which cursorpipe-server does not have).",
        )
    media = _string(source, "media_type", f"{where}.source")
    if not media.startswith("image/"):
        raise _bad(f"{where}.source.media_type", f"{where}.source.media_type must be an image type.")
    try:
        data = base64.b64decode(_string(source, "data", f"{where}.source"), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.source.data", f"{where}.source.data is not valid base64.") from None
    return ImagePart(mime_type=media, data=data)


def _tool_result(block: Mapping[str, Any], where: str) -> ChatMessage:
    """A ``tool_result`` block as a ``tool`` message. An ``is_error`` result says so in its text,
    since cursorpipe's tool messages have no error flag (the model reads it either way)."""
    call_id = _string(block, "tool_use_id", where)
    content = block.get("content", "")
    parts: list[TextPart | ImagePart]
    if isinstance(content, str):
        parts = [TextPart(content)]
    elif isinstance(content, list):
        parts = []
        for j, item in enumerate(content):
            inner = f"{where}.content[{j}]"
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                parts.append(TextPart(_string(item, "text", inner)))
            elif kind == "image":
                parts.append(_image(item, inner))
            else:
                raise _bad(inner, f"{inner} must be a text or image block (got {kind!r}).")
    else:
        raise _bad(f"{where}.content", f"{where}.content must be a string or a list of blocks.")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise _bad(f"{where}.is_error", f"{where}.is_error must be a boolean.")
    if is_error:
        parts.insert(0, TextPart("[tool error] "))
    return ChatMessage(role="tool", content=tuple(parts), tool_call_id=call_id)


def _tool_use(block: Mapping[str, Any], where: str) -> ToolCall:
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise _bad(f"{where}.input", f"{where}.input must be an object.")
    return ToolCall(
        id=_string(block, "id", where),
        name=_string(block, "name", where),
        arguments=json.dumps(tool_input, ensure_ascii=False),
    )


_Role = Literal["user", "assistant"]
#: Blocks a client sends back from an earlier answer that carry nothing Cursor can use: Cursor
#: keeps no thinking signatures, so passed-back reasoning is dropped (docs/anthropic.md §2).
_DROPPED = {"assistant": frozenset({"thinking", "redacted_thinking"}), "user": frozenset()}


def _blocks(role: _Role, content: list[Any], where: str) -> list[ChatMessage]:
    """One Anthropic message of blocks as cursorpipe messages: a user message's ``tool_result``
    blocks become ``tool`` messages (before its remaining parts, as Anthropic orders them); an
    assistant message's ``tool_use`` blocks become its tool calls."""
    parts: list[TextPart | ImagePart] = []
    calls: list[ToolCall] = []
    tool_messages: list[ChatMessage] = []
    for at, block in _objects(content, f"{where}.content"):
        kind = block.get("type")
        if kind in _DROPPED[role]:
            continue
        if kind == "text":
            parts.append(TextPart(_string(block, "text", at)))
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "tool_result" and role == "user":
            tool_messages.append(_tool_result(block, at))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, at))
        else:
            raise _bad(
                f"{at}.type",
                f"{at}.type {kind!r} is not supported in a {role} message by cursorpipe-server.",
            )
    out = tool_messages
    if parts or calls:
        out.append(ChatMessage(role=role, content=tuple(parts), tool_calls=tuple(calls)))
    return out


def _conversation(raw: list[Any]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for where, message in _objects(raw, "messages"):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _bad(f"{where}.role", f"{where}.role must be 'user' or 'assistant' (got {role!r}).")
        content = message.get("content")
        if isinstance(content, str):
            out.append(ChatMessage.of(role, content))
        elif isinstance(content, list):
            out.extend(_blocks(role, content, where))
        else:
            raise _bad(f"{where}.content", f"{where}.content must be a string or a list of blocks.")
    if not any(m.role != "system" for m in out):
        raise _bad("messages", "messages must hold at least one text, image or tool block.")
    return out


# ----------------------------------------------------------------------------------------------
# tools, tool_choice, thinking
# ----------------------------------------------------------------------------------------------
def _anthropic_tools(raw: list[Any] | None) -> tuple[Mapping[str, Any], ...]:
    """Custom tools (``name``, ``description``, ``input_schema``) in the chat shape, validated by
    the OpenAI routes' own checks with the params named as the caller wrote them. Typed tools
    (``web_search_...``, ``bash_...``, ``text_editor_...``...) run on Anthropic's side or have
    schemas only Anthropic knows: refused, naming the tool."""
    converted: list[Any] = []
    for where, tool in _objects(raw or [], "tools"):
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise _bad(
                f"{where}.type",
                f"{where} is Anthropic's server or built-in tool {kind!r}, which cursorpipe-server "
                "cannot run; declare a custom tool (name, description, input_schema) instead.",
            )
        if not isinstance(tool.get("input_schema"), dict):
            raise _bad(f"{where}.input_schema", f"{where}.input_schema must be a JSON Schema object.")
        fn = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if "description" in tool:
            fn["description"] = tool["description"]
        converted.append({"type": "function", "function": fn})
    try:
        return _tools(converted)
    except APIError as exc:
        rename = {".function.parameters": ".input_schema", ".function": ""}
        param, message = exc.param or "tools", exc.message
        for old, new in rename.items():
            param, message = param.replace(old, new), message.replace(old, new)
        raise _bad(param, message) from None


def _anthropic_tool_choice(
    raw: Any, tools: tuple[Mapping[str, Any], ...]
) -> tuple[str | Mapping[str, Any] | None, bool]:
    """Anthropic's ``tool_choice`` as the OpenAI-style choice the core takes, and whether parallel
    calls are allowed: ``auto`` -> ``auto``, ``any`` -> ``required``, ``tool`` -> that function,
    ``none`` -> ``none``; ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``."""
    if raw is None:
        return None, True
    if not isinstance(raw, dict):
        raise _bad("tool_choice", "tool_choice must be an object with a type.")
    kind = raw.get("type")
    disable = raw.get("disable_parallel_tool_use", False)
    if not isinstance(disable, bool):
        where = "tool_choice.disable_parallel_tool_use"
        raise _bad(where, f"{where} must be a boolean.")
    openai_choice: Any
    if kind == "tool":
        openai_choice = {"type": "function", "function": {"name": raw.get("name")}}
    elif kind in ("auto", "any", "none"):
        openai_choice = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise _bad("tool_choice.type", f"tool_choice.type must be auto, any, tool or none (got {kind!r}).")
    try:
        choice = _tool_choice(openai_choice, tools)
    except APIError as exc:
        param = (exc.param or "tool_choice").replace(".function", "")
        message = exc.message.replace("'required'", "'any'").replace(".function", "")
        raise _bad(param, message) from None
    return choice, not disable


def effort_for(thinking: Any, output_config: Any, *, max_tokens: int) -> str | None:
    """The reasoning effort for Anthropic's ``thinking`` and ``output_config.effort``.

    Cursor has no thinking budget, only the model's effort (or thinking on/off) parameter
    (live-dialect.md row 14), so the budget picks a level:

    ============================================  ==========================
    Anthropic                                     cursorpipe ``reasoning_effort``
    ============================================  ==========================
    ``{"type": "disabled"}``                      ``none`` (thinking off)
    ``{"type": "enabled", "budget_tokens": N}``   ``low`` for N < 4096, ``medium`` for
                                                  N < 16384, ``high`` from 16384 on
    ``{"type": "adaptive"}``                      the model's default
    ``output_config.effort``                      ``low`` / ``medium`` / ``high`` / ``xhigh``;
                                                  ``max`` -> ``xhigh``; wins over ``thinking``
    ============================================  ==========================

    As at Anthropic, ``budget_tokens`` must be at least 1024 and below ``max_tokens``.
    """
    effort = _thinking_effort(thinking, max_tokens)
    if output_config is None:
        return effort
    if not isinstance(output_config, dict):
        raise _bad("output_config", "output_config must be an object.")
    if "effort" in output_config:
        value = output_config["effort"]
        if value not in _EFFORTS:
            raise _bad(
                "output_config.effort", "output_config.effort must be low, medium, high, xhigh or max."
            )
        return _EFFORTS[value]
    return effort


def _output_format(output_config: Any, output_format: Any) -> Mapping[str, Any] | None:
    """Anthropic's structured outputs (``output_config.format``, or the beta's top-level
    ``output_format``): ``{"type": "json_schema", "schema": {...}}`` becomes the chat shape's
    ``json_schema`` response format, so the core asks for, extracts and validates the JSON."""
    where, raw = "output_format", output_format
    if isinstance(output_config, dict) and "format" in output_config:
        where, raw = "output_config.format", output_config["format"]
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "json_schema":
        raise _bad(f"{where}.type", f"{where} must be {{'type': 'json_schema', 'schema': {{...}}}}.")
    schema = raw.get("schema")
    if not isinstance(schema, dict):
        raise _bad(f"{where}.schema", f"{where}.schema must be a JSON Schema object.")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _thinking_effort(thinking: Any, max_tokens: int) -> str | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise _bad("thinking", "thinking must be an object with a type.")
    kind = thinking.get("type")
    if kind == "disabled":
        return "none"
    if kind == "adaptive":
        return None
    if kind != "enabled":
        raise _bad("thinking.type", f"thinking.type must be enabled, disabled or adaptive (got {kind!r}).")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
        raise _bad("thinking.budget_tokens", "thinking.budget_tokens must be an integer of at least 1024.")
    if budget >= max_tokens:
        raise _bad("thinking.budget_tokens", "thinking.budget_tokens must be less than max_tokens.")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
