"""The one fold of a turn's event stream.

Every surface that needs a turn's outcome rather than its events (``CursorClient.complete``,
sessions, the server's non-streaming routes, ChatCursor and CursorLLM) feeds the same events to a
:class:`TurnAccumulator`. Keeping one fold means one answer to "what did the turn produce": which
tool calls count (valid, not answered by a ``tool_handler``), which text is a server notice rather
than model output, which usage wins (``TurnEnd``'s over a separate ``UsageEvent``), and how usage is
estimated when no transport reported any.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .types import (
    CompletionResult,
    Event,
    ParsedOutput,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)

__all__ = ["TurnAccumulator", "collect"]


class TurnAccumulator:
    """Folds the events of one turn into its outcome; :meth:`result` builds the
    :class:`~cursorpipe.CompletionResult`.

    Feed every event (``feed``), or use :func:`collect` to drain a stream. Events the fold does not
    keep (``ToolCallDelta``, ``TokenCountDelta``) are ignored, so a consumer can feed everything it
    forwards. Valid tool calls are kept by their index (a later event for the same index replaces
    the earlier one) and returned in index order.
    """

    __slots__ = (
        "_calls",
        "_invalid",
        "_notices",
        "_start",
        "_text",
        "_thinking",
        "info",
        "parsed",
        "stop_reason",
        "usage",
    )

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._notices: list[str] = []
        self._calls: dict[int, ToolCallEvent] = {}
        self._invalid: list[ToolCallEvent] = []
        self.usage: Usage | None = None
        """The turn's usage as reported (``TurnEnd.usage`` wins over an earlier ``UsageEvent``)."""
        self.stop_reason: StopReason | None = None
        """``None`` until ``TurnEnd`` arrived."""
        self.info: TransportInfo | None = None
        self.parsed: Any = None
        """The validated value of a ``response_format`` turn (from :class:`ParsedOutput`)."""

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, event: Event) -> None:
        """Accumulate one event."""
        # One dispatch per event type instead of an isinstance ladder: the fold runs on every
        # event of every turn (design.md: the per-event path is the hot path). The table is the
        # class's, so an accumulator costs no bound methods to build (one per turn).
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _on_text(self, event: TextDelta) -> None:
        (self._notices if event.notice else self._text).append(event.text)

    def _on_thinking(self, event: ThinkingDelta) -> None:
        self._thinking.append(event.text)

    def _on_call(self, event: ToolCallEvent) -> None:
        if event.handled:
            return  # answered by a tool_handler inside the turn: not the caller's to run
        if event.error is None:
            self._calls[event.index] = event
        else:
            self._invalid.append(event)

    def _on_usage(self, event: UsageEvent) -> None:
        self.usage = event.usage

    def _on_info(self, event: TransportInfo) -> None:
        self.info = event

    def _on_end(self, event: TurnEnd) -> None:
        self.stop_reason = event.stop_reason
        self.usage = event.usage or self.usage

    def _on_parsed(self, event: ParsedOutput) -> None:
        self.parsed = event.value

    # -- reading -----------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """True once ``TurnEnd`` was fed."""
        return self.stop_reason is not None

    @property
    def text(self) -> str:
        """The model's answer so far (server notices excluded)."""
        return "".join(self._text)

    @property
    def thinking(self) -> str:
        return "".join(self._thinking)

    @property
    def notices(self) -> tuple[str, ...]:
        """Server notices (quota, model substitution) that are not model output."""
        return tuple(self._notices)

    @property
    def tool_call_events(self) -> list[ToolCallEvent]:
        """The valid calls the caller must answer, in index order."""
        return [self._calls[k] for k in sorted(self._calls)]

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(e.call for e in self.tool_call_events)

    @property
    def invalid_tool_calls(self) -> tuple[ToolCallEvent, ...]:
        """Calls the transport could not accept (``ToolCallEvent.error`` set)."""
        return tuple(self._invalid)

    def usage_or_estimate(self, request: TurnRequest | None) -> Usage:
        """The reported usage, or an estimate (``estimated=True``) from the request's text and
        the answer when no transport reported any."""
        if self.usage is not None:
            return self.usage
        prompt = "".join(m.text for m in request.messages) if request is not None else ""
        return Usage(
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(self.text),
            estimated=True,
        )

    def result(
        self, request: TurnRequest | None = None, *, session_id: str | None = None
    ) -> CompletionResult:
        """The :class:`~cursorpipe.CompletionResult` of what was fed (``request`` supplies the model
        name when the transport did not report one, and the prompt for a usage estimate)."""
        info = self.info
        model = info.model if info is not None and info.model else (request.model if request else "")
        return CompletionResult(
            text=self.text,
            model=model,
            session_id=session_id or (info.session_id if info is not None else None),
            stop_reason=self.stop_reason or "stop",
            duration_ms=(time.perf_counter() - self._start) * 1000,
            usage=self.usage_or_estimate(request),
            thinking=self.thinking,
            tool_calls=self.tool_calls,
            invalid_tool_calls=self.invalid_tool_calls,
            parsed=self.parsed,
            transport=info.transport if info is not None else "",
            fallback_from=info.fallback_from if info is not None else (),
            notices=self.notices,
        )


_HANDLERS: dict[type, Callable[[TurnAccumulator, Any], None]] = {
    TextDelta: TurnAccumulator._on_text,
    ThinkingDelta: TurnAccumulator._on_thinking,
    ToolCallEvent: TurnAccumulator._on_call,
    UsageEvent: TurnAccumulator._on_usage,
    TransportInfo: TurnAccumulator._on_info,
    TurnEnd: TurnAccumulator._on_end,
    ParsedOutput: TurnAccumulator._on_parsed,
}


async def collect(
    stream: AsyncIterator[Event], request: TurnRequest | None = None, *, session_id: str | None = None
) -> CompletionResult:
    """Drain an event stream (closing it, also on error) into a :class:`CompletionResult`."""
    acc = TurnAccumulator()
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        # What contextlib.aclosing does, without its two Python-level calls per turn (issue 16).
        try:
            async for event in stream:
                acc.feed(event)
        finally:
            await aclose()
    else:
        async for event in stream:
            acc.feed(event)
    return acc.result(request, session_id=session_id)
