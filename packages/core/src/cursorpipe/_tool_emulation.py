"""Emulated tool calling for transports without a client tool channel (acp, subprocess).

Cursor's CLI runs only its own tools; a caller's functions cannot be registered with it. For those
transports cursorpipe describes the tools in the system prompt and asks the model to answer a
tool call with one strict JSON object between ``<tool_calls>`` and ``</tool_calls>``. The stream
parser below passes ordinary text through, holds back anything that may be the start of the tag,
and turns the tagged block into tool-call events; a block that is not valid JSON, or names an
unknown tool, becomes an *invalid* tool call (``ToolCallEvent.error``), never an exception.
Results of earlier calls (``tool`` messages) are rendered back into plain text for the next turn.
Every call produced this way is flagged ``emulated=True``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ._tool_choice import forced_tool
from .types import ChatMessage, TextPart, ToolCall, ToolCallEvent, ToolSpec

__all__ = [
    "CLOSE_TAG",
    "OPEN_TAG",
    "EmulatedToolParser",
    "render_history",
    "tool_instructions",
]

OPEN_TAG = "<tool_calls>"
CLOSE_TAG = "</tool_calls>"


def tool_instructions(tools: Sequence[ToolSpec], tool_choice: str | Mapping[str, Any] | None) -> str:
    """The system-prompt block that offers ``tools`` under the given ``tool_choice``."""
    if not tools or tool_choice == "none":
        return ""
    specs = [{"name": t.name, "description": t.description, "parameters": dict(t.parameters)} for t in tools]
    forced = forced_tool(tool_choice)
    if forced:
        rule = f"You MUST call the tool {forced!r} now; answer with nothing but the tool call block."
    elif tool_choice in ("required", "any"):
        rule = "You MUST call at least one tool now; answer with nothing but the tool call block."
    else:
        rule = "Call a tool only when it helps; otherwise answer normally in plain text."
    return (
        "You can call these functions (JSON Schema parameters):\n"
        f"{json.dumps(specs, ensure_ascii=False)}\n"
        f"To call functions, reply with exactly one block: {OPEN_TAG}"
        '{"tool_calls": [{"name": "<function name>", "arguments": {<arguments object>}}]}'
        f"{CLOSE_TAG} and nothing after it. Several calls may go in the list. "
        "Arguments must be valid JSON matching the schema. Results come back in a later message. " + rule
    )


def render_history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Rewrite assistant tool calls and ``tool`` results as plain text a CLI model understands."""
    out: list[ChatMessage] = []
    for msg in messages:
        if msg.role == "assistant" and msg.tool_calls:
            block = json.dumps(
                {
                    "tool_calls": [
                        {"name": c.name, "arguments": _loads_or_raw(c.arguments)} for c in msg.tool_calls
                    ]
                },
                ensure_ascii=False,
            )
            text = (msg.text + "\n" if msg.text else "") + OPEN_TAG + block + CLOSE_TAG
            out.append(ChatMessage(role="assistant", content=(TextPart(text),)))
        elif msg.role == "tool":
            label = f"Result of tool call {msg.tool_call_id}" if msg.tool_call_id else "Tool result"
            if msg.name:
                label += f" ({msg.name})"
            out.append(ChatMessage(role="user", content=(TextPart(f"{label}:\n{msg.text}"),)))
        else:
            out.append(msg)
    return out


def _loads_or_raw(text: str) -> Any:
    try:
        value = json.loads(text or "{}")
        # A caller's history may hold arguments nested past what json.dumps can re-encode
        # (issue 12): such text is shown to the model as it came.
        json.dumps(value)
    except (ValueError, RecursionError):
        return text
    return value


class EmulatedToolParser:
    """Split a text stream into plain text and emulated tool calls."""

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        self._names = {t.name for t in tools}
        self._buf = ""
        self._in_block = False
        self._block = ""
        self.calls: list[ToolCallEvent] = []

    def feed(self, text: str) -> str:
        """Consume a text delta; return the text that is safe to show as answer text."""
        if self._in_block:
            self._block += text
            return ""
        buf = self._buf + text
        self._buf = ""
        idx = buf.find(OPEN_TAG)
        if idx >= 0:
            self._in_block = True
            self._block = buf[idx + len(OPEN_TAG) :]
            return buf[:idx]
        for k in range(min(len(OPEN_TAG) - 1, len(buf)), 0, -1):
            if buf.endswith(OPEN_TAG[:k]):
                self._buf = buf[-k:]
                return buf[:-k]
        return buf

    def finish(self) -> tuple[str, list[ToolCallEvent]]:
        """End of stream: (held-back text, the tool calls found)."""
        rest, self._buf = self._buf, ""
        if not self._in_block:
            return rest, self.calls
        raw = self._block.split(CLOSE_TAG, 1)[0].strip()
        raw = raw.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        self.calls = self._parse(raw)
        return rest, self.calls

    def _parse(self, raw: str) -> list[ToolCallEvent]:
        try:
            return self._parse_block(raw)
        except RecursionError:
            # The model's block nests deeper than the JSON codec goes: an invalid call, not a crash.
            return [self._invalid(0, "", raw, "tool call block is nested too deeply")]

    def _parse_block(self, raw: str) -> list[ToolCallEvent]:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return [self._invalid(0, "", raw, f"tool call block is not valid JSON: {exc}")]
        items = data.get("tool_calls") if isinstance(data, dict) else data
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not items:
            return [self._invalid(0, "", raw, "tool call block holds no calls")]
        events = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                events.append(self._invalid(i, "", json.dumps(item), "tool call has no name"))
                continue
            name = item["name"]
            args = item.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args or "{}")
                except ValueError:
                    events.append(self._invalid(i, name, args, "arguments are not valid JSON"))
                    continue
            args_text = json.dumps(args, ensure_ascii=False)
            if not isinstance(args, dict):
                events.append(self._invalid(i, name, args_text, "arguments are not a JSON object"))
            elif name not in self._names:
                events.append(self._invalid(i, name, args_text, f"unknown tool {name!r}"))
            else:
                events.append(ToolCallEvent(ToolCall(_call_id(), name, args_text), index=i, emulated=True))
        return events

    @staticmethod
    def _invalid(index: int, name: str, raw: str, error: str) -> ToolCallEvent:
        return ToolCallEvent(ToolCall(_call_id(), name, raw), index=index, emulated=True, error=error)


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
