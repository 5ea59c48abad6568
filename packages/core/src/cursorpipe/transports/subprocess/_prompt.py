"""Turn a request's messages into the one prompt ``agent --print`` takes, and pass it safely.

Print mode accepts exactly one prompt per run and has no system-prompt or history flags
(acp.md §3.3), so a stateless multi-message request is *flattened*: system text, the earlier turns
as a labelled transcript, then the new message. A session turn sends only the new message and
relies on ``--resume`` for the history (acp.md §6.4).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import ConfigurationError
from ...types import ChatMessage

__all__ = ["ARGV_PROMPT_MAX_BYTES", "flatten_messages", "prompt_argv"]

# Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN) and Windows a whole command line at
# 32,767 characters (acp.md §3.3, freema#26); above these sizes the prompt goes on stdin, which the
# CLI reads when no positional prompt is given (acp.md §3.3 [S]).
ARGV_PROMPT_MAX_BYTES = 8_000 if os.name == "nt" else 100_000

_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result", "system": "System"}


def _check(messages: Sequence[ChatMessage]) -> None:
    if any(m.images for m in messages):
        raise ConfigurationError(
            "The subprocess transport (agent --print) cannot send images; use the connect transport "
            "(CURSORPIPE_STRATEGY=connect) for image inputs.",
            code="unsupported_content",
        )


def flatten_messages(messages: Sequence[ChatMessage]) -> str:
    """One prompt holding system text, earlier turns and the new message.

    A single user message without system text is sent as is.
    """
    _check(messages)
    system = [m.text for m in messages if m.role == "system" and m.text.strip()]
    convo = [m for m in messages if m.role != "system"]
    if not system and len(convo) == 1 and convo[0].role == "user":
        return convo[0].text
    parts: list[str] = []
    if system:
        parts.append("<system_instructions>\n" + "\n\n".join(system) + "\n</system_instructions>")
    current = ""
    if convo and convo[-1].role == "user":
        current = convo[-1].text
        convo = convo[:-1]
    if convo:
        lines = [f"{_LABELS.get(m.role, m.role.title())}: {m.text}" for m in convo]
        parts.append("<conversation_so_far>\n" + "\n\n".join(lines) + "\n</conversation_so_far>")
    if current:
        parts.append(current)
    else:
        parts.append("Continue the conversation as the assistant.")
    return "\n\n".join(parts)


def prompt_argv(prompt: str) -> tuple[list[str], bytes | None]:
    """(argv tail, stdin bytes). Short prompts go after ``--`` so a prompt starting with ``-`` is
    never parsed as an option (acp.md §3.3, PROBE §11.1); long ones go on stdin."""
    try:
        data = prompt.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot travel in argv; stdin gets U+FFFD
        return [], prompt.encode("utf-8", "replace")
    if len(data) <= ARGV_PROMPT_MAX_BYTES and "\x00" not in prompt:
        return ["--", prompt], None
    return [], data
