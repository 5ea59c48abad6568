"""Tool calling in the emulator: scripts, the default "model" rule, deterministic replies, helpers.

Cursor's models call a client's own tools through the MCP exec channel (connect.md §6.1, issue 7):
the run request offers ``AgentRunRequest.mcp_tools`` (``McpTools{repeated McpToolDefinition}``), the
model's call arrives as ``ExecServerMessage{id, mcp_args: McpArgs{name, args, tool_call_id, ...}}`` and
the client answers ``ExecClientMessage{id, mcp_result: McpResult}`` then ``stream_close{id}``. The
schema (agent-v1.schema.txt) has **no tool_choice field** anywhere on the run request, so the emulator
honours tool choice only the way a model would: from instructions in the prompt (see
:func:`default_tool_calls`).

What Cursor's official SDK does (cursor-sdk 1.1.0 bundle, ``804.js``; the conformance test in
tests/connect/test_emulator_tools.py runs it against this emulator): a custom tool ``f`` is offered as
``McpToolDefinition{name: "custom-user-tools-f", provider_identifier: "custom-user-tools",
tool_name: "f", description, input_schema: Value(schema)}`` in ``AgentRunRequest.mcp_tools`` and
again in every ``RequestContext.tools`` it returns, with ``RequestContext.mcp_instructions`` (one
entry for server ``custom-user-tools`` listing the tools) and ``mcp_meta_tool_options{enabled: true,
mcp_descriptors: [...]}``. On ``mcp_args`` it finds the tool by ``tool_name`` (else ``name`` minus
the ``custom-user-tools-`` prefix), decodes ``args`` (``google.protobuf.Value`` map) to JSON, and
answers ``McpResult.success{content: [{text}], is_error: false}`` (a non-string result as JSON text
plus ``structured_content``), ``McpResult.error{error}`` when the tool raises or is unknown, then
``stream_close``. It shows ``partial_tool_call``/``tool_call_started`` as a running ``mcp`` tool
call and ``tool_call_completed`` as completed.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2

from ..._proto.agent.v1 import agent_pb2

__all__ = [
    "CUSTOM_TOOLS_PROVIDER",
    "ToolCallRecord",
    "ToolCallScript",
    "ToolContext",
    "ToolResult",
    "default_tool_arguments",
    "default_tool_calls",
    "expected_tool_reply",
    "expected_tools_reply",
    "history_assistant_tool_calls",
    "history_tool_result",
    "history_user",
    "mcp_result_text",
    "mcp_tool_definition",
    "tool_definitions",
    "tool_rounds",
]


@dataclass(frozen=True)
class ToolCallScript:
    """One tool call the emulated model makes.

    Attributes:
        name: the tool's name as offered: ``McpToolDefinition.tool_name`` (the bare function name)
            or its wire ``name`` (a name that was not offered
            is still called: a hallucinated tool, the client should answer ``tool_not_found``).
        arguments: the call's arguments; ``None`` = derived from the tool's schema and the prompt by
            :func:`default_tool_arguments`.
        call_id: the tool-call id (``McpArgs.tool_call_id``, the updates' ``call_id``); ``None`` = a
            deterministic ``call_<run-prefix>_<n>``.
        args_chunks: how many ``partial_tool_call`` updates carry the arguments' JSON text.
    """

    name: str
    arguments: Mapping[str, Any] | None = None
    call_id: str | None = None
    args_chunks: int = 3


@dataclass(frozen=True)
class ToolResult:
    """A tool result the emulated model sees: from an ``mcp_result`` in this run (``source="exec"``)
    or from a ``tool`` message of the request's history (``source="history"``). ``text`` is the
    result rendered as :func:`mcp_result_text` renders it."""

    tool_call_id: str
    name: str
    text: str
    is_error: bool = False
    source: str = "exec"


@dataclass(frozen=True)
class ToolContext:
    """What a ``Behaviour.tool_calls`` callable gets before each round of tool calls.

    ``round`` counts rounds from 1 (a stateless request whose history already ends in tool results
    starts at the number of tool rounds in it + 1); ``results`` are the results seen so far (history
    first); ``tools`` maps each offered tool name to its definition; ``text`` is the user message;
    ``system_prompt`` is the system text the model saw (or ``""``).
    """

    text: str
    round: int
    tools: Mapping[str, agent_pb2.McpToolDefinition]
    results: tuple[ToolResult, ...]
    system_prompt: str = ""
    run_request: Any = None

    def schema(self, name: str) -> dict[str, Any]:
        """The JSON schema of tool ``name`` (``{}`` if unknown or absent)."""
        d = self.tools.get(name)
        return tool_schema(d) if d is not None else {}


@dataclass
class ToolCallRecord:
    """One tool call the emulator made (``RunRecord.tool_calls``).

    ``outcome``: ``"pending"``, ``"result"`` (an ``mcp_result`` arrived), ``"throw"`` (the client
    declined with ``throw``), ``"timeout"`` (nothing within ``Behaviour.tool_result_timeout_s``) or
    ``"invalid"`` (the answer had another result case).
    """

    call_id: str
    name: str
    arguments: dict[str, Any]
    exec_id: int
    round: int
    offered: bool
    result: agent_pb2.McpResult | None = None
    result_text: str = ""
    outcome: str = "pending"
    stream_closed: bool = False
    exec_heartbeats: int = 0


ToolCallsSpec = Sequence[ToolCallScript] | Callable[[ToolContext], Sequence[ToolCallScript] | None]


def tool_rounds(*rounds: Sequence[ToolCallScript]) -> Callable[[ToolContext], Sequence[ToolCallScript]]:
    """A ``Behaviour.tool_calls`` script making the given rounds in order: round 1 sends the first
    list (all calls in parallel), and once all its results are in, round 2 sends the second, and so
    on; then the model answers. Example: ``tool_rounds([lookup], [book])``."""
    frozen = tuple(tuple(r) for r in rounds)

    def script(ctx: ToolContext) -> Sequence[ToolCallScript]:
        return frozen[ctx.round - 1] if ctx.round <= len(frozen) else ()

    return script


# -- replies ----------------------------------------------------------------------------------


def expected_tool_reply(tool_name: str, result_text: str) -> str:
    """The emulator's default answer after one tool result: ``"Tool NAME returned: RESULT"``.

    ``result_text`` is the result as :func:`mcp_result_text` renders it (for a plain text result:
    the text itself). Tests compare against this function and never hard-code the format."""
    return f"Tool {tool_name} returned: {result_text}"


def expected_tools_reply(results: Sequence[tuple[str, str]] | Sequence[ToolResult]) -> str:
    """The default answer after several results (in call order): one :func:`expected_tool_reply`
    line per ``(tool_name, result_text)`` pair (or :class:`ToolResult`), joined by newlines."""
    lines = []
    for r in results:
        name, text = (r.name, r.text) if isinstance(r, ToolResult) else (r[0], r[1])
        lines.append(expected_tool_reply(name, text))
    return "\n".join(lines)


def mcp_result_text(result: agent_pb2.McpResult) -> tuple[str, bool]:
    """``(text, is_error)`` of an ``McpResult`` as the emulated model reads it.

    ``success``: its text content items joined (images as ``[image MIME]``; ``structured_content``
    as JSON when there is no text), prefixed ``"error: "`` when ``is_error``. ``error``:
    ``"error: MESSAGE"``; ``rejected``: ``"rejected: REASON"``; ``permission_denied``:
    ``"permission denied: ERROR"``; ``tool_not_found``: ``"tool not found: NAME"``;
    ``server_not_found``: ``"server not found: NAME"``; ``approved``: ``"approved"``."""
    case = result.WhichOneof("result")
    if case == "success":
        s = result.success
        parts: list[str] = []
        for item in s.content:
            which = item.WhichOneof("content")
            if which == "text":
                parts.append(item.text.text)
            elif which == "image":
                parts.append(f"[image {item.image.mime_type}]")
        text = "".join(parts)
        if not text and s.HasField("structured_content"):
            text = json.dumps(json_format.MessageToDict(s.structured_content), sort_keys=True)
        return (f"error: {text}", True) if s.is_error else (text, False)
    if case == "error":
        return f"error: {result.error.error}", True
    if case == "rejected":
        return f"rejected: {result.rejected.reason}", True
    if case == "permission_denied":
        return f"permission denied: {result.permission_denied.error}", True
    if case == "tool_not_found":
        return f"tool not found: {result.tool_not_found.name}", True
    if case == "server_not_found":
        return f"server not found: {result.server_not_found.name}", True
    if case == "approved":
        return "approved", False
    return "error: empty result", True


# -- definitions and history builders ---------------------------------------------------------


#: The provider (MCP "server") Cursor's official SDK uses for a caller's own tools (cursor-sdk 1.1.0
#: bundle, ``804.js``: ``Dt="custom-user-tools"``; custom-tools.d.ts).
CUSTOM_TOOLS_PROVIDER = "custom-user-tools"


def mcp_tool_definition(
    name: str,
    description: str = "",
    parameters: Mapping[str, Any] | None = None,
    *,
    provider_identifier: str = CUSTOM_TOOLS_PROVIDER,
    schema_json: bool = False,
) -> agent_pb2.McpToolDefinition:
    """An ``McpToolDefinition`` for an OpenAI-style function tool, built exactly as Cursor's official
    SDK builds one for a custom tool (cursor-sdk 1.1.0, ``804.js``, the run request's ``mcpTools``):
    ``provider_identifier="custom-user-tools"``, ``tool_name`` = the function name, ``name`` =
    ``"custom-user-tools-" + name`` (the MCP wire identifier), ``description``, and the JSON schema
    as ``input_schema`` (``google.protobuf.Value``). ``schema_json=True`` also sets
    ``input_schema_json`` (the SDK does so only in the request context, under an option)."""
    schema = dict(parameters) if parameters is not None else {"type": "object", "properties": {}}
    d = agent_pb2.McpToolDefinition(
        name=f"{provider_identifier}-{name}" if provider_identifier else name,
        tool_name=name,
        provider_identifier=provider_identifier,
        description=description,
    )
    json_format.ParseDict(schema, d.input_schema)
    if schema_json:
        d.input_schema_json = json.dumps(schema, sort_keys=True)
    return d


def tool_schema(d: agent_pb2.McpToolDefinition) -> dict[str, Any]:
    """The JSON schema of a definition: ``input_schema_json`` if set, else ``input_schema``."""
    if d.HasField("input_schema_json"):
        try:
            loaded = json.loads(d.input_schema_json)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    if d.HasField("input_schema"):
        value = json_format.MessageToDict(d.input_schema)
        if isinstance(value, dict):
            return value
    return {}


def tool_name_of(d: agent_pb2.McpToolDefinition) -> str:
    """The name the model knows a tool by: ``tool_name`` (the bare function name), else ``name``."""
    return d.tool_name or d.name


def tool_definitions(req: agent_pb2.AgentRunRequest) -> dict[str, agent_pb2.McpToolDefinition]:
    """The offered tools by name: the bare ``tool_name`` first, the wire ``name`` as an alias."""
    out: dict[str, agent_pb2.McpToolDefinition] = {}
    for d in req.mcp_tools.mcp_tools:
        for key in (d.tool_name, d.name):
            if key and key not in out:
                out[key] = d
    return out


def history_user(text: str) -> agent_pb2.ConversationHistoryMessage:
    """A ``ConversationHistoryMessage.user`` with one text part."""
    m = agent_pb2.ConversationHistoryMessage()
    m.user.content.add().text.text = text
    return m


def history_assistant_tool_calls(
    calls: Sequence[tuple[str, str, Mapping[str, Any]]], text: str = ""
) -> agent_pb2.ConversationHistoryMessage:
    """An assistant history message with optional text and ``tool_call`` parts
    (``ConversationHistoryToolCall{tool_call_id, tool_name, args_json}``), one per
    ``(tool_call_id, tool_name, arguments)``."""
    m = agent_pb2.ConversationHistoryMessage()
    if text:
        m.assistant.content.add().text.text = text
    for call_id, name, args in calls:
        tc = m.assistant.content.add().tool_call
        tc.tool_call_id, tc.tool_name, tc.args_json = call_id, name, json.dumps(dict(args))
    m.assistant.SetInParent()
    return m


def history_tool_result(
    tool_call_id: str, tool_name: str, text: str, *, is_error: bool = False
) -> agent_pb2.ConversationHistoryMessage:
    """A ``ConversationHistoryMessage.tool`` (a tool result) with one text part."""
    m = agent_pb2.ConversationHistoryMessage()
    m.tool.tool_call_id, m.tool.tool_name = tool_call_id, tool_name
    m.tool.content.add().text.text = text
    if is_error:
        m.tool.is_error = True
    return m


def pending_history_results(
    messages: Sequence[agent_pb2.ConversationHistoryMessage],
) -> tuple[tuple[ToolResult, ...], int]:
    """The tool results at the end of a history (after its last user message) and how many tool
    rounds (assistant messages with tool calls) lead to them."""
    names: dict[str, str] = {}
    results: list[ToolResult] = []
    rounds = 0
    for m in messages:
        case = m.WhichOneof("message")
        if case == "user":
            results, rounds = [], 0
        elif case == "assistant":
            calls = [c.tool_call for c in m.assistant.content if c.WhichOneof("content") == "tool_call"]
            for c in calls:
                names[c.tool_call_id] = c.tool_name
            rounds += 1 if calls else 0
        elif case == "tool":
            t = m.tool
            text = "".join(c.text.text for c in t.content if c.WhichOneof("content") == "text")
            is_error = t.HasField("is_error") and t.is_error
            name = t.tool_name or names.get(t.tool_call_id, "")
            results.append(
                ToolResult(t.tool_call_id, name, f"error: {text}" if is_error else text, is_error, "history")
            )
    return tuple(results), rounds


# -- the default model rule -------------------------------------------------------------------

_NONE_HINT = re.compile(
    r"(\btool_choice\s*[:=]\s*[\"'`]?none\b|\b(do not|don't|never|must not)\s+(call|use)\s+(any\s+)?"
    r"(of\s+the\s+)?(tools?|functions?)\b)",
    re.IGNORECASE,
)
_REQUIRED_HINT = re.compile(
    r"(\btool_choice\s*[:=]\s*[\"'`]?(required|any)\b|\bmust\s+(call|use)\s+(at\s+least\s+one|one|a)\s+"
    r"(of\s+the\s+)?((provided|available|given)\s+)?(tools?|functions?)\b)",
    re.IGNORECASE,
)
_STOPWORDS = {
    "get", "set", "fetch", "tool", "tools", "function", "func", "my", "the", "do", "run", "call", "make",
    "create", "compute", "calculate", "lookup", "find", "search", "query", "list", "a", "an", "to", "of",
    "and", "for", "by", "with", "no", "args", "fn", "api", "data", "info", "current", "new",
}  # fmt: skip


def _named_hint(name: str, text: str) -> bool:
    n = re.escape(name)
    pattern = (
        rf"(\btool_choice\s*[:=]\s*[\"'`]?{n}\b|\b(use|call|using|invoke)\s+(the\s+)?(tool|function)\s+"
        rf"[\"'`]?{n}\b|\b(use|call|using|invoke)\s+(the\s+)?[\"'`]?{n}[\"'`]?\s+(tool|function)\b)"
    )
    return re.search(pattern, text, re.IGNORECASE) is not None


def _name_tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t.lower() for t in re.split(r"[^A-Za-z0-9]+", spaced) if t and t.lower() not in _STOPWORDS]


def default_tool_calls(
    tools: Mapping[str, agent_pb2.McpToolDefinition], text: str, hints: str = ""
) -> list[ToolCallScript]:
    """Which offered tools the emulated model calls for the user message ``text``; ``hints`` is
    extra instruction text (the custom system prompt) searched only for tool-choice instructions.

    In order: an instruction not to use tools (``tool_choice: none``, "do not call any tools") →
    no call; an instruction naming a tool (``tool_choice: NAME``, "use the tool NAME", "call the
    NAME tool") → that tool; tools whose name appears as a word in ``text`` → each, in order of
    appearance (all in parallel); else tools with a meaningful word of their name in ``text``
    (``get_weather`` for "What is the weather in Oslo?"); else, with an instruction to call some
    tool (``tool_choice: required``/``any``, "you must call one of the tools") → the first tool.
    Arguments come from :func:`default_tool_arguments`. Unknown names are never called here."""
    if not tools:
        return []
    everything = f"{hints}\n{text}"
    if _NONE_HINT.search(everything):
        return []
    names = list(dict.fromkeys(tool_name_of(d) for d in tools.values()))
    for name in names:
        if _named_hint(name, everything):
            return [ToolCallScript(name)]
    found: list[tuple[int, str]] = []
    for name in names:
        m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text)
        if m:
            found.append((m.start(), name))
    if not found:
        words = {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)}
        for name in names:
            hits = [t for t in _name_tokens(name) if t in words or t + "s" in words]
            if hits:
                first = min(text.lower().find(h) for h in hits)
                found.append((first, name))
    if found:
        return [ToolCallScript(n) for _, n in sorted(found)]
    if _REQUIRED_HINT.search(everything):
        return [ToolCallScript(names[0])]
    return []


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        if isinstance(node, Mapping):
            return node
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for opt in options:
                if isinstance(opt, Mapping) and opt.get("type") != "null":
                    return _resolve(opt, root)
    return schema


def _call_syntax(name: str, text: str) -> tuple[list[Any], dict[str, Any]] | None:
    """``NAME(1, x="y")`` in the text → positional and keyword literals (``ast``, never eval)."""
    m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}\s*\(", text)
    if m is None:
        return None
    depth, end = 0, -1
    for i in range(m.end() - 1, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        return None
    try:
        call = ast.parse(f"f({text[m.end() : end]})", mode="eval").body
        assert isinstance(call, ast.Call)
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except (SyntaxError, ValueError, AssertionError, TypeError, MemoryError, RecursionError):
        return None
    return args, kwargs


def _json_after(name: str, text: str) -> dict[str, Any] | None:
    m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}\s*:?\s*(?=\{{)", text)
    if m is None:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[m.end() :])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


_PLACE = re.compile(r"\b(?:in|for|at|about|of|from|near)\s+([A-Z][\w.'-]*(?:(?:\s|,\s?)[A-Z][\w.'-]*)*)")


def _first_number(text: str, integer: bool) -> float | int | None:
    # Bounded digit runs: int() refuses strings over 4300 digits (and a model would not copy them).
    m = re.search(r"-?\d{1,15}" if integer else r"-?\d{1,15}(?:\.\d{1,15})?", text)
    if m is None:
        return None
    return int(m.group()) if integer else float(m.group())


def _number_for(schema: Mapping[str, Any], integer: bool, given: str | None, text: str) -> int | float:
    """A number for a numeric property: the one named in the prompt, else the first in it, else 0,
    moved inside the schema's bounds."""
    value: Any = None
    if given is not None:
        try:
            value = int(given) if integer else float(given)
        except (ValueError, OverflowError):
            value = None
    if value is None:
        value = _first_number(text, integer)
    if value is None:
        value = 0
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    step = 1 if integer else 0.5
    if isinstance(lo, int | float) and (value < lo or ("exclusiveMinimum" in schema and value <= lo)):
        value = lo + (step if "exclusiveMinimum" in schema else 0)
    if isinstance(hi, int | float) and (value > hi or ("exclusiveMaximum" in schema and value >= hi)):
        value = hi - (step if "exclusiveMaximum" in schema else 0)
    return int(value) if integer else float(value)


def _value_for(prop: str, schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    m = re.search(rf"\b{re.escape(prop)}\s*[=:]\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)", text)
    given = m.group(1).strip("\"'") if m else None
    if kind in ("integer", "number"):
        return _number_for(schema, kind == "integer", given, text)
    if kind == "boolean":
        return given.lower() not in ("false", "0", "no") if given is not None else True
    if kind == "array":
        items = schema.get("items")
        raw_n = schema.get("minItems", 0)
        n = min(int(raw_n), 8) if isinstance(raw_n, int | float) and raw_n > 0 else 0
        if isinstance(items, Mapping) and n > 0 and depth < 4:
            return [_value_for(prop, items, root, text, depth + 1) for _ in range(n)]
        return []
    if kind == "object" or "properties" in schema:
        return _object_for(schema, root, text, depth + 1) if depth < 4 else {}
    if kind == "null":
        return None
    if given is not None:
        return given
    # A string: a capitalised phrase after a preposition ("the weather in San Francisco, CA?" →
    # "San Francisco, CA"), else the prompt itself (trimmed): non-empty and depends on what was asked.
    m = _PLACE.search(text)
    value = m.group(1) if m else (text.strip().rstrip("?.!").strip() or prop)
    return value[:200]


def _object_for(schema: Mapping[str, Any], root: Mapping[str, Any], text: str, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    required = schema.get("required")
    wanted = [p for p in props if not isinstance(required, list) or p in required]
    return {p: _value_for(p, props[p], root, text, depth) for p in wanted if isinstance(props[p], Mapping)}


def default_tool_arguments(schema: Mapping[str, Any], text: str, name: str = "") -> dict[str, Any]:
    """Arguments for a call of tool ``name`` with JSON ``schema``, derived deterministically from
    the user message ``text``.

    ``NAME(3, unit="C")`` in the text → positional values mapped onto the schema's properties in
    order, plus the keywords (literals only); ``NAME {"city": "Oslo"}`` → that JSON object; else one
    value per required property (every property when ``required`` is absent): ``const``, first
    ``enum`` value or ``default`` when given; ``prop=value`` / ``prop: value`` written in the text;
    numbers: the first number in the text (clamped into the schema's bounds, else 0); booleans
    ``true``; arrays ``[]`` (``minItems`` items if required); objects recursively; strings: the
    first capitalised phrase after a preposition ("weather in San Francisco, CA?" → ``"San
    Francisco, CA"``), else the user text itself (trimmed, at most 200 characters)."""
    schema = _resolve(schema, schema)
    if name:
        call = _call_syntax(name, text)
        if call is not None:
            positional, keywords = call
            raw_props = schema.get("properties")
            props = list(raw_props) if isinstance(raw_props, Mapping) else []
            out = {p: v for p, v in zip(props, positional, strict=False)}
            out.update(keywords)
            return out
        obj = _json_after(name, text)
        if obj is not None:
            return obj
    return _object_for(schema, schema, text, 0)


def value_of(obj: Any) -> struct_pb2.Value:
    """A JSON-compatible Python value as ``google.protobuf.Value``."""
    v = struct_pb2.Value()
    json_format.ParseDict(obj, v)
    return v
