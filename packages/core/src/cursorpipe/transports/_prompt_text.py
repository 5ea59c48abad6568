"""A conversation as one prompt text, for the transports whose wire takes a single prompt.

``agent --print`` takes exactly one prompt and has no system-prompt or history flags (acp.md
§3.3); a new ACP session cannot be given earlier turns or a system prompt either (``session/load``
only replays sessions the agent stored itself, acp.md §3.1). So a stateless multi-message request
is written out as text, in one algorithm with one documented :class:`PromptFormat` per transport:

* a lone user message without system text is sent verbatim;
* otherwise the system messages (non-blank ones, joined by a blank line) come first inside
  ``<{system_tag}>``, then the earlier turns as a labelled transcript inside
  ``<{conversation_tag}>`` (``User: ...``, ``Assistant: ...``, ``Tool result: ...``; an assistant's
  tool calls are appended as ``[called: name(arguments), ...]``), then the newest user message as
  is; when the conversation does not end with a user message the format's ``continue_line`` (if
  any) closes the prompt. Blocks are separated by a blank line.

The connect transport does not flatten: its wire carries the history and the system prompt
(connect.md §5.5). Session turns on acp and subprocess send only the new messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..types import ChatMessage

__all__ = ["ACP_FORMAT", "PRINT_FORMAT", "PromptFormat", "prompt_text"]


@dataclass(frozen=True)
class PromptFormat:
    """The tags and closing line one transport uses (see the module docstring)."""

    system_tag: str
    conversation_tag: str
    continue_line: str = ""


#: ``agent acp`` (the acp transport): ``<system>``, ``<conversation>``, no closing line.
ACP_FORMAT = PromptFormat(system_tag="system", conversation_tag="conversation")
#: ``agent --print`` (the subprocess transport): ``<system_instructions>``,
#: ``<conversation_so_far>``, and an explicit request to continue when no user message is last
#: (print mode needs something to answer).
PRINT_FORMAT = PromptFormat(
    system_tag="system_instructions",
    conversation_tag="conversation_so_far",
    continue_line="Continue the conversation as the assistant.",
)

_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result", "system": "System"}


def _line(message: ChatMessage) -> str:
    text = message.text
    if message.tool_calls:
        calls = ", ".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
        text = f"{text}\n[called: {calls}]".strip()
    return f"{_LABELS.get(message.role, message.role.title())}: {text}"


def prompt_text(messages: Sequence[ChatMessage], fmt: PromptFormat) -> str:
    """``messages`` as one prompt in ``fmt`` (see the module docstring for the layout)."""
    system = [m.text for m in messages if m.role == "system" and m.text.strip()]
    convo = [m for m in messages if m.role != "system"]
    if not system and len(convo) == 1 and convo[0].role == "user":
        return convo[0].text
    parts: list[str] = []
    if system:
        parts.append(f"<{fmt.system_tag}>\n" + "\n\n".join(system) + f"\n</{fmt.system_tag}>")
    current = ""
    if convo and convo[-1].role == "user":
        current = convo.pop().text
    if convo:
        lines = "\n\n".join(_line(m) for m in convo)
        parts.append(f"<{fmt.conversation_tag}>\n{lines}\n</{fmt.conversation_tag}>")
    if current:
        parts.append(current)
    elif fmt.continue_line:
        parts.append(fmt.continue_line)
    return "\n\n".join(parts)
