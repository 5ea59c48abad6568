"""Turn a request's messages into the one prompt ``agent --print`` takes, and pass it safely.

Print mode accepts exactly one prompt per run and has no system-prompt or history flags
(acp.md §3.3), so a stateless multi-message request is *flattened* (the one algorithm of
:mod:`cursorpipe.transports._prompt_text`, in its ``PRINT_FORMAT``). A session turn sends only
the new message and relies on ``--resume`` for the history (acp.md §6.4).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import ConfigurationError
from ...types import ChatMessage
from .._prompt_text import PRINT_FORMAT, prompt_text

__all__ = ["ARGV_PROMPT_MAX_BYTES", "flatten_messages", "prompt_argv"]

# Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN) and Windows a whole command line at
# 32,767 characters (acp.md §3.3, freema#26); above these sizes the prompt goes on stdin, which the
# CLI reads when no positional prompt is given (acp.md §3.3 [S]).
ARGV_PROMPT_MAX_BYTES = 8_000 if os.name == "nt" else 100_000


def _check(messages: Sequence[ChatMessage]) -> None:
    if any(m.images for m in messages):
        raise ConfigurationError(
            "The subprocess transport (agent --print) cannot send images; use the connect transport "
            "(CURSORPIPE_STRATEGY=connect) for image inputs.",
            code="unsupported_content",
        )


def flatten_messages(messages: Sequence[ChatMessage]) -> str:
    """One prompt holding system text, earlier turns and the new message (``PRINT_FORMAT`` of
    :mod:`cursorpipe.transports._prompt_text`). A single user message without system text is sent
    as is. Images cannot travel in print mode and raise :class:`ConfigurationError`."""
    _check(messages)
    return prompt_text(messages, PRINT_FORMAT)


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
