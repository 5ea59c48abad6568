"""``tool_choice`` in the one form every layer reads (OpenAI's: ``auto``/``none``/``required``/a
function object), shared by the transports, the client's repair stage and the integrations.

It sits below both the client and the transports, so a transport that honours a forced tool (the
connect turn's prompt instruction) never imports client-level code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["forced_tool"]


def forced_tool(tool_choice: str | Mapping[str, Any] | None) -> str | None:
    """The tool name a ``tool_choice`` forces, if it names one."""
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        return name if isinstance(name, str) and name else None
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required", "any"):
        return tool_choice
    return None
