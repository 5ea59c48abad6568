"""The one way a caller's ``tool_handler`` is run, for every transport and for the client-side
loop of transports without native tools.

A handler that raises does not fail the turn: the model reads the (redacted) error text as the
tool's result and can recover, as it would from a failing tool in Cursor's own agent. A handler
slower than its bound raises :class:`~cursorpipe.errors.ToolResultTimeoutError`, since the model
cannot go on without the result and the caller should know which tool hung.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ._redact import redact
from .errors import ToolResultTimeoutError
from .types import ToolCall, ToolHandler

__all__ = ["ToolAnswer", "run_tool_handler"]

log = logging.getLogger("cursorpipe")


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """A handler's result text; ``is_error`` when the handler raised (the text is then the
    redacted exception)."""

    text: str
    is_error: bool = False


async def run_tool_handler(
    handler: ToolHandler, call: ToolCall, timeout_s: float, *, transport: str | None = None
) -> ToolAnswer:
    """Run ``handler`` for ``call`` within ``timeout_s`` seconds."""
    try:
        async with asyncio.timeout(timeout_s):
            result = await handler(call)
    except TimeoutError as exc:
        raise ToolResultTimeoutError(
            f"The tool_handler gave no result for tool {call.name!r} (call {call.id}) within "
            f"{timeout_s:g} s. Raise tool_result_timeout_s (CURSORPIPE_TOOL_RESULT_TIMEOUT_S) or "
            "make the tool faster.",
            transport=transport,
            details={"tool_name": call.name, "tool_call_id": call.id},
        ) from exc
    except Exception as exc:  # the caller's tool failed: the model reads the error
        log.info("cursorpipe: tool %r raised %s; sent as an error result", call.name, type(exc).__name__)
        return ToolAnswer(redact(f"{type(exc).__name__}: {exc}"), is_error=True)
    return ToolAnswer(result if isinstance(result, str) else str(result))
