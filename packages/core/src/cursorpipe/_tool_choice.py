"""``tool_choice`` in the one form every layer reads (OpenAI's: ``auto``/``none``/``required``/a
function object), shared by the transports, the client's repair stage and the integrations.

It sits below both the client and the transports, so a transport that honours a forced tool (the
connect turn's prompt instruction) never imports client-level code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigurationError

__all__ = ["forced_tool", "normalize_tool_choice"]


def forced_tool(tool_choice: str | Mapping[str, Any] | None) -> str | None:
    """The tool name a ``tool_choice`` forces, if it names one."""
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
        return name if isinstance(name, str) and name else None
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required", "any"):
        return tool_choice
    return None


def normalize_tool_choice(
    tool_choice: str | bool | Mapping[str, Any] | None,
    tool_names: Sequence[str],
    *,
    required: bool = False,
) -> str | dict[str, Any] | None:
    """A framework's ``tool_choice`` in OpenAI's form, checked against the offered tools.

    ``"auto"``/``"none"``/``"required"`` pass through; ``"any"`` (LangChain's and LlamaIndex's
    word) and ``True`` with several tools mean ``"required"``; ``True`` with one tool and a tool's
    name force that tool; a dict passes through; ``None``/``False`` leave the choice to the model
    (``"required"`` when ``required``, LlamaIndex's ``tool_required``). Any other value is a
    :class:`~cursorpipe.ConfigurationError` naming the offered tools.
    """
    if tool_choice is None or tool_choice is False:
        return "required" if required else None
    if tool_choice is True:
        return _forced(tool_names[0]) if len(tool_names) == 1 else "required"
    if isinstance(tool_choice, Mapping):
        return dict(tool_choice)
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    if tool_choice == "any":
        return "required"
    if tool_choice in tool_names:
        return _forced(tool_choice)
    raise ConfigurationError(
        f"tool_choice {tool_choice!r} is neither auto/none/required/any nor the name of an offered tool "
        f"({', '.join(tool_names) or 'no tools offered'})",
        code="invalid_request",
    )


def _forced(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}
