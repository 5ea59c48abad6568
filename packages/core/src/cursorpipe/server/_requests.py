"""Parsing and validating request bodies: malformed JSON and wrong types are 400s in OpenAI's
shape naming the field (never FastAPI's 422 or a 500), and the unknown-field policy of
integrations.md §4.1: lenient by default (fields we cannot honour are listed in the
``x-cursorpipe-ignored-params`` response header), strict mode answers 400 naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._constants import SERVER_MAX_N
from ..errors import ConfigurationError
from ..types import ChatMessage, normalize_messages
from ._errors import APIError

__all__ = ["ChatParams", "ResponsesParams", "TurnSpec", "parse_chat", "parse_json_object", "parse_responses"]

IGNORED_HEADER = "x-cursorpipe-ignored-params"


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400."""
    if not raw.strip():
        raise APIError(
            400, "The request body must be a JSON object.", code="invalid_json", should_retry=False
        )
    try:
        # UTF-8 only (RFC 8259 §8.1): json.loads would also guess UTF-16/32 from bytes, which
        # would slip escapes past the surrogate check below.
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise APIError(
            400, f"The request body is not valid JSON: {exc}", code="invalid_json", should_retry=False
        ) from None
    if not isinstance(value, dict):
        raise APIError(
            400, "The request body must be a JSON object.", code="invalid_json", should_retry=False
        )
    if _ESCAPED_SURROGATE.search(raw):
        _refuse_lone_surrogates(value)
    return value


# UTF-8 bytes cannot encode a surrogate, so a lone one can only come from a \uD800-\uDFFF escape:
# the full walk runs only for bodies that have such an escape (a valid pair decodes to one char).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(value: Any) -> None:
    """400 for a string holding a lone UTF-16 surrogate (valid JSON, but no UTF-8 exists for it,
    so it would fail later, deep in a transport or in the response)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(
                    400,
                    "The request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without "
                    "its pair); such text cannot be encoded as UTF-8.",
                    code="invalid_json",
                    should_retry=False,
                ) from None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and (
            part.lower() in _TYPE_TAGS or "[" in part or part[:1] in ("_", "") or part[:1].isupper()
        ):
            continue  # pydantic names the union member it tried ("str", "list[str]"): not a field
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = part
        else:
            out += f".{part}"
    return out


def _validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        param = _param(tuple(err["loc"])) or None
        if err["type"] == "missing":
            raise APIError(
                400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            ) from None
        raise APIError(
            400, f"Invalid value for '{param}': {err['msg']}.", param=param, code="invalid_value"
        ) from None
    except (RecursionError, ValueError) as exc:  # absurdly deep nesting and the like
        raise APIError(400, f"Invalid request body: {exc}", code="invalid_value") from None


def _messages(raw: Any, param: str) -> list[ChatMessage]:
    try:
        return normalize_messages(raw)
    except ConfigurationError as exc:
        raise APIError(400, exc.message, param=param, code="invalid_value") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # Odd shapes inside a message (e.g. tool_calls that are not objects) must be a 400 too.
        raise APIError(400, f"Invalid {param}: {exc}", param=param, code="invalid_value") from None


def _policy(extra: Mapping[str, Any] | None, strict: bool, prefix: str = "") -> list[str]:
    names = sorted(prefix + k for k in (extra or {}))
    if strict and names:
        raise APIError(
            400,
            f"Unsupported parameter: '{names[0]}' is not supported by cursorpipe-server "
            "(strict mode; start the server without --strict-params to have it ignored).",
            param=names[0],
            code="unsupported_parameter",
            should_retry=False,
        )
    # The names go into a response header: percent-encode anything but printable ASCII so an odd
    # field name (non-Latin-1, CR/LF) can neither break the response nor inject a header.
    return [quote(n, safe="!#$%&'*+-.^_`|~:/[]@()<>?={}") for n in names]


#: Declared on the bodies (a wrong type or range is still a 400 naming the field) but honoured by no
#: transport: Cursor has no sampling knobs (issue 15). A value that is set is listed as ignored, and
#: strict mode refuses it, like an unknown field.
_SAMPLING = ("temperature", "top_p", "seed")


def _ignored(parsed: BaseModel, strict: bool) -> list[str]:
    sampling = {name: True for name in _SAMPLING if getattr(parsed, name, None) is not None}
    return _policy({**(parsed.model_extra or {}), **sampling}, strict)


# ----------------------------------------------------------------------------------------------
# /v1/chat/completions
# ----------------------------------------------------------------------------------------------
class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool | None = None


#: OpenAI's ``reasoning_effort`` values; the transport maps them to the model's own effort
#: parameter (live-dialect.md row 14).
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class _ChatBody(BaseModel):
    # strict: "1" is not a number and true is not an int (wrong types are 400s, not coercions).
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    messages: list[Any] = Field(min_length=1)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=SERVER_MAX_N)
    user: str | None = None
    seed: int | None = None
    # Checked by hand below (_tools/_tool_choice/_response_format) so each error names its param.
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    reasoning_effort: Effort | None = None


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """What any wire format asks the shared turn loop to run (``_turn.py``): the conversation and
    the generation options the core honours, in the core's shapes."""

    model: str
    messages: list[ChatMessage]
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    user: str | None = None
    ignored: list[str] = field(default_factory=list)
    #: function tools in the chat shape the core takes
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool = True
    response_format: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class ChatParams(TurnSpec):
    """A validated chat completion request."""

    include_usage: bool = False


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value", should_retry=False)


#: protobuf's parse recursion limit: a tool schema travels to Cursor as a ``google.protobuf.Value``.
MAX_TOOL_SCHEMA_DEPTH = 100


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, iteratively (deep values are exactly the ones to measure)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def _tools(raw: list[Any] | None) -> tuple[Mapping[str, Any], ...]:
    """OpenAI function tools: ``{"type": "function", "function": {"name", "description"?,
    "parameters"?, "strict"?}}``; anything else is a 400 naming the exact field."""
    out: list[Mapping[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(raw or ()):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(where, f"{where} must be an object.")
        if tool.get("type", "function") != "function":
            raise _bad(f"{where}.type", f"{where}.type must be 'function' (got {tool.get('type')!r}).")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _bad(f"{where}.function", f"{where}.function must be an object.")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _bad(
                f"{where}.function.name",
                f"{where}.function.name must be 1-64 characters of letters, digits, '_' or '-'.",
            )
        if name in names:
            raise _bad(f"{where}.function.name", f"Duplicate tool name {name!r}.")
        names.add(name)
        if not isinstance(fn.get("description", ""), (str, type(None))):
            raise _bad(f"{where}.function.description", f"{where}.function.description must be a string.")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(
                f"{where}.function.parameters", f"{where}.function.parameters must be a JSON Schema object."
            )
        if params is not None and _depth(params) > MAX_TOOL_SCHEMA_DEPTH:
            raise _bad(
                f"{where}.function.parameters",
                f"{where}.function.parameters is nested more than {MAX_TOOL_SCHEMA_DEPTH} levels deep, "
                "the limit of Cursor's protocol (tool schemas travel as protobuf values).",
            )
        if not isinstance(fn.get("strict", False), (bool, type(None))):
            raise _bad(f"{where}.function.strict", f"{where}.function.strict must be a boolean.")
        out.append({"type": "function", "function": fn})
    return tuple(out)


def _tool_choice(raw: Any, tools: tuple[Mapping[str, Any], ...]) -> str | Mapping[str, Any] | None:
    """``auto`` / ``none`` / ``required`` / ``{"type": "function", "function": {"name": ...}}``
    naming one of ``tools``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise _bad(
                "tool_choice", f"tool_choice must be 'auto', 'none', 'required' or an object (got {raw!r})."
            )
        if raw == "required" and not tools:
            raise _bad("tool_choice", "tool_choice 'required' needs tools.")
        return raw
    if (
        not isinstance(raw, dict)
        or raw.get("type") != "function"
        or not isinstance(raw.get("function"), dict)
    ):
        raise _bad(
            "tool_choice", 'tool_choice object must be {"type": "function", "function": {"name": ...}}.'
        )
    name = raw["function"].get("name")
    known = {t["function"]["name"] for t in tools}
    if not isinstance(name, str) or name not in known:
        raise _bad("tool_choice.function.name", f"tool_choice names {name!r}, which is not among the tools.")
    return {"type": "function", "function": {"name": name}}


def _response_format(raw: Any) -> Mapping[str, Any] | None:
    """``text`` (= nothing asked), ``json_object``, or ``json_schema`` with a ``name`` and a
    ``schema`` object (OpenAI's shape)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("response_format", "response_format must be an object.")
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise _bad(
            "response_format.type",
            f"response_format.type must be 'text', 'json_object' or 'json_schema' (got {kind!r}).",
        )
    spec = raw.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("response_format.json_schema", "response_format.json_schema must be an object.")
    if not isinstance(spec.get("name"), str) or not _TOOL_NAME.match(spec["name"]):
        raise _bad(
            "response_format.json_schema.name",
            "response_format.json_schema.name must be 1-64 characters of letters, digits, '_' or '-'.",
        )
    if not isinstance(spec.get("schema", {}), dict):
        raise _bad(
            "response_format.json_schema.schema", "response_format.json_schema.schema must be an object."
        )
    return {"type": "json_schema", "json_schema": spec}


def parse_chat(body: dict[str, Any], *, strict: bool) -> ChatParams:
    """Validate a chat completion body (see the module docstring for the field policy).

    ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` are honoured
    (issue 7), so they are never listed as ignored; ``temperature``, ``top_p`` and ``seed`` are
    validated but reach no transport, so they are."""
    parsed: _ChatBody = _validate(_ChatBody, body)
    tools = _tools(parsed.tools)
    ignored = _ignored(parsed, strict)
    if parsed.stream_options is not None:
        ignored += _policy(parsed.stream_options.model_extra, strict, "stream_options.")
    stop = (parsed.stop,) if isinstance(parsed.stop, str) else tuple(parsed.stop or ())
    return ChatParams(
        model=(parsed.model or "").strip(),
        messages=_messages(parsed.messages, "messages"),
        stream=bool(parsed.stream),
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
        temperature=parsed.temperature,
        max_tokens=parsed.max_completion_tokens or parsed.max_tokens,
        stop=tuple(s for s in stop if s),
        n=parsed.n or 1,
        user=parsed.user,
        ignored=ignored,
        tools=tools,
        tool_choice=_tool_choice(parsed.tool_choice, tools),
        parallel_tool_calls=parsed.parallel_tool_calls is not False,
        response_format=_response_format(parsed.response_format),
        reasoning_effort=parsed.reasoning_effort,
    )


# ----------------------------------------------------------------------------------------------
# /v1/responses (the basic text case)
# ----------------------------------------------------------------------------------------------
class _Reasoning(BaseModel):
    # Responses API `reasoning: {effort, summary}`; only the effort can be honoured.
    model_config = ConfigDict(extra="allow", strict=True)
    effort: Effort | None = None


class _ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    input: str | list[Any]
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    reasoning: _Reasoning | None = None


@dataclass(frozen=True, slots=True)
class ResponsesParams:
    """A validated Responses API request."""

    model: str
    messages: list[ChatMessage]
    instructions: str | None
    stream: bool
    max_output_tokens: int | None
    temperature: float | None
    user: str | None
    metadata: dict[str, str]
    ignored: list[str]
    #: function tools in the chat shape the core takes (converted from the Responses API's flat one)
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    parallel_tool_calls: bool = True
    reasoning_effort: str | None = None

    def spec(self) -> TurnSpec:
        """The turn to run (one choice; this route has no ``stop`` or ``response_format``)."""
        return TurnSpec(
            model=self.model,
            messages=self.messages,
            stream=self.stream,
            temperature=self.temperature,
            max_tokens=self.max_output_tokens,
            user=self.user,
            ignored=self.ignored,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            reasoning_effort=self.reasoning_effort,
        )


def _input_items(raw: list[Any]) -> list[Any]:
    """Responses input items as chat messages: ``message`` items, and the tool traffic of an
    earlier turn (``function_call`` → an assistant message with ``tool_calls``, consecutive calls
    merged; ``function_call_output`` → a ``tool`` message)."""
    items: list[Any] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise APIError(400, f"input[{i}] must be an object.", param=f"input[{i}]", code="invalid_value")
        kind = item.get("type", "message")
        if kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise _bad(f"input[{i}].{key}", f"input[{i}].{key} must be a string.")
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            prev = items[-1] if items else None
            if prev is not None and prev.get("role") == "assistant" and prev.get("tool_calls"):
                prev["tool_calls"].append(call)
            else:
                items.append({"role": "assistant", "content": None, "tool_calls": [call]})
            continue
        if kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"input[{i}].call_id", f"input[{i}].call_id must be a string.")
            output = item.get("output")
            if not isinstance(output, str):
                output = json.dumps(output, ensure_ascii=False)
            items.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
            continue
        if kind != "message":
            raise APIError(
                400,
                f"input[{i}] has type {kind!r}; cursorpipe-server supports message, function_call and "
                "function_call_output items.",
                param=f"input[{i}].type",
                code="unsupported_value",
            )
        items.append({k: v for k, v in item.items() if k in ("role", "content")})
    return items


def _responses_tools(raw: list[Any] | None) -> tuple[Mapping[str, Any], ...]:
    """The Responses API's flat function tools (``{"type": "function", "name", "parameters"...}``)
    in the chat shape, validated by :func:`_tools` with params named as the caller wrote them."""
    converted: list[Any] = []
    for i, tool in enumerate(raw or ()):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}]", f"tools[{i}] must be an object.")
        if tool.get("type") != "function":
            raise _bad(
                f"tools[{i}].type",
                f"tools[{i}].type must be 'function' (cursorpipe-server has no built-in tools).",
            )
        converted.append({"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}})
    try:
        return _tools(converted)
    except APIError as exc:
        param = (exc.param or "").replace(".function", "")
        raise _bad(param, exc.message.replace(".function", "")) from None


def _responses_tool_choice(raw: Any, tools: tuple[Mapping[str, Any], ...]) -> str | Mapping[str, Any] | None:
    if isinstance(raw, dict) and raw.get("type") == "function" and "function" not in raw:
        raw = {"type": "function", "function": {"name": raw.get("name")}}
    try:
        return _tool_choice(raw, tools)
    except APIError as exc:
        raise _bad(exc.param or "tool_choice", exc.message) from None


def parse_responses(body: dict[str, Any], *, strict: bool) -> ResponsesParams:
    """Validate a Responses API body (text and image input items, instructions, limits)."""
    parsed: _ResponsesBody = _validate(_ResponsesBody, body)
    tools = _responses_tools(parsed.tools)
    # `store` only says whether OpenAI would keep the response; nothing to honour here.
    ignored = _ignored(parsed, strict)
    if parsed.reasoning is not None:
        ignored += _policy(parsed.reasoning.model_extra, strict, "reasoning.")
    raw_input: Any = parsed.input
    if isinstance(raw_input, str):
        items: list[Any] = [{"role": "user", "content": raw_input}]
    else:
        items = _input_items(raw_input)
    if parsed.instructions:
        items = [{"role": "system", "content": parsed.instructions}, *items]
    if not items:
        raise APIError(400, "input must not be empty.", param="input", code="invalid_value")
    return ResponsesParams(
        model=(parsed.model or "").strip(),
        messages=_messages(items, "input"),
        instructions=parsed.instructions,
        stream=bool(parsed.stream),
        max_output_tokens=parsed.max_output_tokens,
        temperature=parsed.temperature,
        user=parsed.user,
        metadata=dict(parsed.metadata or {}),
        ignored=ignored,
        tools=tools,
        tool_choice=_responses_tool_choice(parsed.tool_choice, tools),
        parallel_tool_calls=parsed.parallel_tool_calls is not False,
        reasoning_effort=parsed.reasoning.effort if parsed.reasoning is not None else None,
    )
