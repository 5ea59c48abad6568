"""A deterministic fake "model" that follows cursorpipe's emulated tool protocol and JSON requests.

The adapters' tool and structured-output tests need a model that actually calls the tools it is
offered and answers JSON when asked. On transports without a native tool channel the core offers
tools in a system-prompt block (``cursorpipe._tool_emulation.tool_instructions``) and asks for JSON
with another (``cursorpipe._structured.ResponseFormat.instructions``); this model reads those
blocks exactly as a real model would read the prompt, so the tests drive the whole path:

- a tool result as the last message ("Result of tool call ...") → a text answer quoting it:
  :func:`expected_answer`;
- tools offered → one ``<tool_calls>`` block: the forced tool, else the first tool whose name (or
  a word of it) the user wrote, else (tool choice "required") the first tool; arguments from the
  emulator's public :func:`~cursorpipe.testing.emulator.default_tool_arguments` over the user's text;
- a JSON schema asked for → an object built from the schema the same way; plain JSON mode → an
  object with the keys the user quoted (``'setup'``), else ``{"answer": <user text>}``;
- anything else → ``"echo: <user text>"``.

:func:`mock_script` plugs it into ``MockTransport(script=...)``; :func:`emulator_reply` into the
emulator's ``Behaviour(reply=...)``: over the connect transport's native tool channel the
emulator's default rule decides the calls and this model writes the answer after the results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cursorpipe import TurnRequest
from cursorpipe.testing.emulator import ReplyContext, default_tool_arguments

__all__ = ["emulator_reply", "expected_answer", "mock_script", "reply_for"]

_TOOLS = re.compile(r"You can call these functions \(JSON Schema parameters\):\n(\[.*?\])\n", re.DOTALL)
_FORCED = re.compile(r"You MUST call the tool '([^']+)' now")
_REQUIRED = "You MUST call at least one tool now"
_SCHEMA = re.compile(r"^.*JSON Schema.*Schema '[^']*': (\{.*\})$", re.MULTILINE)
_OBJECT = "Respond with a single valid JSON object"
_STOPWORDS = {"", "get", "set", "the", "a", "an", "my", "tool", "function", "do", "run"}
_KEYS = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")
_RESULT = re.compile(r"^Result of tool call [^\n]*:\n(.*)$", re.DOTALL)


def expected_answer(results: Sequence[str]) -> str:
    """The fake model's answer after tool results ``results`` (oldest first)."""
    return "The tool said: " + "; ".join(results)


def _tool_call(system: str, user: str) -> str | None:
    found = _TOOLS.search(system)
    if found is None:
        return None
    tools: list[dict[str, Any]] = json.loads(found.group(1))
    by_name = {t["name"]: t for t in tools}
    forced = _FORCED.search(system)
    chosen: dict[str, Any] | None = None
    if forced and forced.group(1) in by_name:
        chosen = by_name[forced.group(1)]
    else:
        named = [(user.find(n), t) for n, t in by_name.items() if n in user]
        if not named:
            # As a model would: "weather" in the question points at get_weather.
            words = set(re.findall(r"[a-z0-9]+", user.lower()))
            named = [
                (0, t)
                for n, t in by_name.items()
                if any(w in words for w in re.split(r"[^a-z0-9]+", n.lower()) if w not in _STOPWORDS)
            ]
        if named:
            chosen = min(named, key=lambda pair: pair[0])[1]
        elif _REQUIRED in system:
            chosen = tools[0]
    if chosen is None:
        return None
    args = default_tool_arguments(chosen.get("parameters") or {}, user, chosen["name"])
    block = {"tool_calls": [{"name": chosen["name"], "arguments": args}]}
    return "<tool_calls>" + json.dumps(block) + "</tool_calls>"


def reply_for(system: str, history: Sequence[tuple[str, str]]) -> str:
    """The reply to a conversation: ``system`` text and ``(role, text)`` messages, oldest first."""
    results: list[str] = []
    for role, text in reversed(history):
        match = _RESULT.match(text) if role == "user" else None
        if match is None:
            break
        results.insert(0, match.group(1))
    if results:
        return expected_answer(results)
    users = [text for role, text in history if role == "user"]
    user = users[-1] if users else ""
    call = _tool_call(system, user)
    if call is not None:
        return call
    schema = _SCHEMA.search(system)
    if schema is not None:
        return json.dumps(default_tool_arguments(json.loads(schema.group(1)), user))
    if _OBJECT in system:
        # JSON mode: the keys the user asked for ('setup' and 'punchline'), else one "answer".
        keys = _KEYS.findall(user) or ["answer"]
        return json.dumps({key: user for key in keys})
    return f"echo: {user}"


def mock_script(request: TurnRequest, session: object) -> str:
    """``MockTransport(script=mock_script)``: answer like :func:`reply_for`."""
    system = "\n".join(m.text for m in request.messages if m.role == "system")
    history = [(m.role, m.text) for m in request.messages if m.role != "system"]
    return reply_for(system, history)


def emulator_reply(ctx: ReplyContext) -> str:
    """``Behaviour(reply=emulator_reply)``: answer like :func:`reply_for` on the emulator.

    With native tools (the connect transport sends them as MCP tool definitions) the emulator's
    own rule makes the calls, and the results it saw this turn arrive in ``ctx.tool_results``;
    the answer quotes them as :func:`expected_answer` says, whichever path they took."""
    if ctx.tool_results:
        return expected_answer([r.text for r in ctx.tool_results])
    history = [(role, text) for role, text in ctx.history if role in ("user", "assistant")]
    return reply_for(ctx.system_prompt, [*history, ("user", ctx.text)])
