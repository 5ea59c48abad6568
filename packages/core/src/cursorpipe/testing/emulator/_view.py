"""What the live service reads from a run: the pieces the emulated model's view is built from.

Issue 11 and live-dialect.md rows 1-24: Cursor builds the model prompt from
``ConversationStateStructure.root_prompt_messages_json`` (JSON blobs fetched from the client's store
with KV ``get_blob``), the checkpoint's turn blobs, the request-context reply (global rules,
``cloud_rule``, tools) and the current user message; ``conversation_history`` is not read (row 3).
This module holds the sans-IO parts: parsing a prompt-message blob, the identity and tool-call-id
checks, and the allowed-tools header rule. ``_turn.py`` does the I/O.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._proto.agent.v1 import agent_pb2
from ._tools import ToolResult

__all__ = [
    "DEFAULT_MIN_CLI_VERSION",
    "MCP_TOOL_FAMILY",
    "TOOL_CALL_ID",
    "PromptMessage",
    "PromptMessageError",
    "cli_version_problem",
    "mode_name",
    "parse_prompt_message",
    "pending_prompt_results",
    "tools_allowed_by_header",
]

#: live-dialect.md row 7: with tools, the live-tested peers allow exactly this family; CAS and KON saw
#: that allowing only ``mcp_tool_call`` hides ``get_mcp_tools_tool_call``, which the run needs to start.
MCP_TOOL_FAMILY: tuple[str, ...] = (
    "mcp_tool_call",
    "get_mcp_tools_tool_call",
    "list_mcp_resources_tool_call",
    "read_mcp_resource_tool_call",
    "mcp_auth_tool_call",
)
#: The members without which MCP tools never reach the model (row 7, confidence A for these two).
_MCP_REQUIRED = ("mcp_tool_call", "get_mcp_tools_tool_call")

#: live-dialect.md row 15: ids outside this pattern get an opaque ``resource_exhausted``.
TOOL_CALL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

#: Oldest ``cli`` build date the emulator accepts (row 1: live peers ran with builds from 2026.07.08
#: on; Cursor rejects stale builds with ERROR_OUTDATED_CLIENT, the exact cut-off is unknown [B]).
DEFAULT_MIN_CLI_VERSION = "2026.07.01"

_CLI_VERSION = re.compile(r"^cli-(\d{4})\.(\d{2})\.(\d{2})-[0-9a-f]{7}$")


class PromptMessageError(ValueError):
    """A ``root_prompt_messages_json`` blob the service could not read."""


@dataclass(frozen=True)
class PromptMessage:
    """One entry of ``root_prompt_messages_json`` as the emulated model reads it."""

    role: str
    text: str
    #: ``(tool_call_id, tool_name, arguments)`` of an assistant entry's tool calls
    tool_calls: tuple[tuple[str, str, Any], ...] = ()
    #: the tool results of a ``tool`` entry
    tool_results: tuple[ToolResult, ...] = ()
    images: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)


def _part_text(value: Any) -> str:
    """A tool result's value as text: strings as they are, AI-SDK ``{type, value}`` outputs by value,
    anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "value" in value and set(value) <= {"type", "value"}:
        return _part_text(value["value"])
    if isinstance(value, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _first(d: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return default


def _tool_result(doc: Mapping[str, Any], text: str) -> ToolResult:
    is_error = bool(_first(doc, "isError", "is_error", default=False))
    return ToolResult(
        str(_first(doc, "toolCallId", "tool_call_id", default="")),
        str(_first(doc, "toolName", "tool_name", "name", default="")),
        f"error: {text}" if is_error else text,
        is_error,
        "history",
    )


def _read_part(
    part: Any, texts: list[str], calls: list[tuple[str, str, Any]], results: list[ToolResult]
) -> int:
    """Add one content part to ``texts``/``calls``/``results``; returns 1 for an image part."""
    if isinstance(part, str):
        texts.append(part)
        return 0
    if not isinstance(part, Mapping):
        raise PromptMessageError("a content part is neither text nor an object")
    kind = str(part.get("type", ""))
    if kind == "text":
        texts.append(str(part.get("text", "")))
    elif kind in ("image", "image_url", "file"):
        return 1
    elif kind in ("tool-call", "tool_call"):
        args = _first(part, "args", "input", "arguments", default={})
        call_id = str(_first(part, "toolCallId", "tool_call_id", "id", default=""))
        calls.append((call_id, str(_first(part, "toolName", "tool_name", "name", default="")), args))
    elif kind in ("tool-result", "tool_result"):
        results.append(
            _tool_result(part, _part_text(_first(part, "result", "output", "content", default="")))
        )
    else:
        raise PromptMessageError(f"unknown content part type {kind!r}")
    return 0


def parse_prompt_message(data: bytes) -> PromptMessage:
    """Parse one prompt-message blob.

    The shape the live-tested peers send (live-dialect.md row 3): ``{"role": "system" | "user" |
    "assistant" | "tool", "content": TEXT | [PART, ...]}`` with parts ``{"type": "text", "text"}``,
    ``{"type": "image", ...}``, ``{"type": "tool-call", "toolCallId", "toolName", "args" | "input"}``
    and ``{"type": "tool-result", "toolCallId", "toolName", "result" | "output", "isError"?}``. The
    exact part keys are not recorded live [B], so the OpenAI spellings are read too (assistant
    ``tool_calls[{id, function{name, arguments}}]``, tool ``tool_call_id`` + ``name`` with text content).
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PromptMessageError(f"prompt message is not JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise PromptMessageError("prompt message is not a JSON object")
    role = doc.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise PromptMessageError(f"prompt message has no known role: {role!r}")
    content = doc.get("content", "")
    texts: list[str] = []
    calls: list[tuple[str, str, Any]] = []
    results: list[ToolResult] = []
    images = 0
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            images += _read_part(part, texts, calls, results)
    elif content is not None:
        raise PromptMessageError("prompt message content is neither text nor a list of parts")
    for tc in doc.get("tool_calls") or ():
        fn = tc.get("function", {}) if isinstance(tc, Mapping) else {}
        raw_args = fn.get("arguments", "{}")
        try:
            args = json.loads(raw_args) if isinstance(raw_args, str) else raw_args
        except ValueError:
            args = raw_args
        calls.append((str(tc.get("id", "")), str(fn.get("name", "")), args))
    if role == "tool" and not results:
        results.append(_tool_result(doc, "".join(texts)))
    return PromptMessage(str(role), "".join(texts), tuple(calls), tuple(results), images, doc)


def pending_prompt_results(messages: Sequence[PromptMessage]) -> tuple[tuple[ToolResult, ...], int, int]:
    """The tool results after the last user message, how many tool rounds lead to them, and the
    index of that last user message (-1 if none). Names missing on a result come from its call."""
    names: dict[str, str] = {}
    results: list[ToolResult] = []
    rounds, last_user = 0, -1
    for i, m in enumerate(messages):
        if m.role == "user":
            results, rounds, last_user = [], 0, i
        elif m.role == "assistant":
            for cid, name, _ in m.tool_calls:
                names[cid] = name
            rounds += 1 if m.tool_calls else 0
        elif m.role == "tool":
            for r in m.tool_results:
                name = r.name or names.get(r.tool_call_id, "")
                results.append(ToolResult(r.tool_call_id, name, r.text, r.is_error, "history"))
    return tuple(results), rounds, last_user


def cli_version_problem(version: str, min_date: str) -> str | None:
    """Why a ``cli`` client version is refused (``None`` if accepted): it must read
    ``cli-YYYY.MM.DD-<7 hex>`` (live-dialect.md row 1) and be built on or after ``min_date``
    (``YYYY.MM.DD``)."""
    m = _CLI_VERSION.match(version)
    if m is None:
        return f"unrecognised client version {version!r}"
    try:
        built = _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        y, mo, d = (int(p) for p in min_date.split("."))
        floor = _dt.date(y, mo, d)
    except ValueError:
        return f"unrecognised client version {version!r}"
    if built < floor:
        return f"client version {version!r} is older than {min_date}"
    return None


def tools_allowed_by_header(headers: Mapping[str, str]) -> bool:
    """Whether ``x-cursor-agent-allowed-tools`` lets MCP tools reach the model (row 7): an absent
    header means Cursor's default tool set (MCP included); ``""`` means none; a list must name
    ``mcp_tool_call`` and ``get_mcp_tools_tool_call``."""
    if "x-cursor-agent-allowed-tools" not in headers:
        return True
    allowed = {t.strip() for t in headers["x-cursor-agent-allowed-tools"].split(",") if t.strip()}
    return all(t in allowed for t in _MCP_REQUIRED)


def mode_name(mode: int) -> str:
    """``AGENT_MODE_PLAN`` → ``"plan"``; unknown numbers as ``"mode-N"``."""
    try:
        return str(agent_pb2.AgentMode.Name(mode)).removeprefix("AGENT_MODE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return f"mode-{mode}"
