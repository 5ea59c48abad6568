"""The validation stage: a forced ``tool_choice`` and a ``response_format`` are checked on the
event stream, so ``complete()``, the server and the adapters share one implementation.

Cursor offers neither a tool-choice field nor constrained decoding to a client (both are asked for
in the prompt, see :mod:`cursorpipe._structured` and ``_tool_choice``), so the stage judges each
answer: a forced tool choice answered in text gets one repair round (then whatever the model says);
an answer that does not validate against the ``response_format`` gets one repair round, then
:class:`~cursorpipe.errors.StructuredOutputError`. The events of a round are held until the round is
judged, so a rejected round never reaches the caller; the accepted round's events follow with the
usage of every round summed, and a :class:`~cursorpipe.types.ParsedOutput` before ``TurnEnd``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from .._fold import TurnAccumulator
from .._tool_choice import forced_tool
from ..errors import StructuredOutputError
from ..types import ChatMessage, Event, ParsedOutput, TurnEnd, TurnRequest, Usage, UsageEvent

__all__ = ["needs_validation", "validated"]

log = logging.getLogger("cursorpipe")

#: Runs one round of a turn through the rest of the pipeline (without this stage).
RoundRunner = Callable[[TurnRequest], AsyncGenerator[Event, None]]

_UNSET: Any = object()


def needs_validation(request: TurnRequest) -> bool:
    """Whether the stage has anything to judge for ``request`` (else it is left out)."""
    return request.response_format is not None or _tool_call_required(request)


def _tool_call_required(request: TurnRequest) -> bool:
    required = request.tool_choice in ("required", "any") or forced_tool(request.tool_choice)
    return bool(required) and bool(request.tools) and request.tool_handler is None


async def validated(
    run_round: RoundRunner, request: TurnRequest, *, in_session: bool = False
) -> AsyncGenerator[Event, None]:
    """The events of ``request``'s accepted round (see the module docstring). ``in_session``: the
    transport keeps the history, so a repair round sends only the new instruction."""
    prior: Usage | None = None
    current = request
    events, acc = await _buffer(run_round(current))
    if _tool_call_required(request) and not acc.tool_calls:
        forced = forced_tool(request.tool_choice)
        ask = (
            f"You did not call a tool. Call the tool {forced!r} now."
            if forced
            else "You did not call a tool. Call at least one of the provided tools now."
        )
        log.info("cursorpipe: tool_choice=%r not honoured; one repair round", request.tool_choice)
        prior = acc.usage_or_estimate(current)
        current = _follow_up(request, acc.text, ask, in_session)
        if request.response_format is None:
            # The last round either way: nothing left to judge, so it streams live.
            async for event in _summed(run_round(current), current, prior):
                yield event
            return
        events, acc = await _buffer(run_round(current))
    parsed = _UNSET
    fmt = request.response_format
    if fmt is not None and acc.stop_reason != "tool_calls":
        try:
            parsed = fmt.validate(acc.text)
        except StructuredOutputError as exc:
            log.info("cursorpipe: structured output invalid (%s); one repair round", exc.message)
            prior = _add(prior, acc.usage_or_estimate(current))
            ask = f"Your answer was not valid: {exc.message}. Reply again with only the corrected JSON."
            current = _follow_up(request, acc.text, ask, in_session)
            events, acc = await _buffer(run_round(current))
            parsed = fmt.validate(acc.text)
    for event in events:
        if isinstance(event, TurnEnd) and parsed is not _UNSET:
            yield ParsedOutput(parsed)
        yield _with_prior(event, acc, current, prior)


async def _buffer(stream: AsyncGenerator[Event, None]) -> tuple[list[Event], TurnAccumulator]:
    """A whole round, held back until it is judged."""
    acc = TurnAccumulator()
    events: list[Event] = []
    async with aclosing(stream) as source:
        async for event in source:
            acc.feed(event)
            events.append(event)
    return events, acc


async def _summed(
    stream: AsyncGenerator[Event, None], request: TurnRequest, prior: Usage | None
) -> AsyncGenerator[Event, None]:
    acc = TurnAccumulator()
    async with aclosing(stream) as source:
        async for event in source:
            acc.feed(event)
            yield _with_prior(event, acc, request, prior)


def _with_prior(event: Event, acc: TurnAccumulator, request: TurnRequest, prior: Usage | None) -> Event:
    """``event`` with the usage of the rejected rounds added (``acc`` has been fed ``event``)."""
    if prior is None:
        return event
    if isinstance(event, UsageEvent):
        return UsageEvent(prior + event.usage)
    if isinstance(event, TurnEnd):
        return TurnEnd(event.stop_reason, prior + acc.usage_or_estimate(request))
    return event


def _add(prior: Usage | None, usage: Usage) -> Usage:
    return usage if prior is None else prior + usage


def _follow_up(request: TurnRequest, answer: str, ask: str, in_session: bool) -> TurnRequest:
    """The repair round: the answer and the instruction, after the conversation so far."""
    if in_session:
        return request.with_messages([ChatMessage.of("user", ask)])
    return request.with_messages(
        [*request.messages, ChatMessage.of("assistant", answer), ChatMessage.of("user", ask)]
    )
