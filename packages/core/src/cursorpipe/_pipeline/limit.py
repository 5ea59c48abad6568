"""The output-limit stage: ``stop`` sequences and ``max_tokens`` enforced on the event stream
(Cursor has neither parameter; :mod:`cursorpipe._limits` holds the counting rules).

Leaving the loop on a limit closes the upstream stream, which cancels the run on the transport.
The stage is only put in the pipeline when a limit is set (issue 16: no per-event cost otherwise).
It sits above the emulated-tools loop, so ``max_tokens`` bounds the answer text of all the loop's
rounds together, as it bounds one answer on a transport with native tools.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence

from .._limits import OutputLimiter, is_default_max_tokens
from ..types import (
    Event,
    TextDelta,
    TokenCountDelta,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)

__all__ = ["limit_output", "limits_active"]

log = logging.getLogger("cursorpipe")


def limits_active(request: TurnRequest, stop: Sequence[str] | None) -> bool:
    """Whether ``request``/``stop`` set any limit (else the stage is left out)."""
    return request.max_tokens is not None or any(stop or ())


async def limit_output(
    source: AsyncGenerator[Event, None], request: TurnRequest, stop: Sequence[str] | None
) -> AsyncGenerator[Event, None]:
    """Pass ``source`` through, cut at the first stop sequence or at ``request.max_tokens``; a cut
    ends with an estimated ``UsageEvent`` and ``TurnEnd("stop" | "length")``."""
    limiter = OutputLimiter(stop, request.max_tokens)
    usage: Usage | None = None
    # try/finally rather than contextlib.aclosing: the same close, two calls fewer per turn.
    try:
        async for event in source:
            if isinstance(event, TextDelta) and not event.notice:
                text, done = limiter.feed(event.text)
                if text:
                    # Most deltas pass whole: the transport's event goes on as it is.
                    yield event if text is event.text else TextDelta(text)
                if done:
                    break
            elif isinstance(event, TokenCountDelta):
                limiter.count(event.tokens)
            elif isinstance(event, UsageEvent):
                usage = event.usage
            elif isinstance(event, TurnEnd):
                rest = limiter.flush()
                if rest:
                    yield TextDelta(rest)
                usage = event.usage or usage
                if usage is not None:
                    yield UsageEvent(usage)
                yield event
                return
            else:
                yield event
    finally:
        await source.aclose()
    # A limit was hit: the upstream run was closed (and cancelled) by leaving the loop above.
    if limiter.reason == "length" and is_default_max_tokens(request.max_tokens):
        log.warning(
            "cursorpipe: the answer of %r was cut at the default max_tokens=%d; pass "
            "max_tokens=None for no limit or a larger max_tokens",
            request.model,
            request.max_tokens,
        )
    cut = Usage(
        input_tokens=estimate_tokens("".join(m.text for m in request.messages)),
        output_tokens=limiter.output_tokens(),
        estimated=True,
    )
    yield UsageEvent(cut)
    yield TurnEnd("length" if limiter.reason == "length" else "stop", cut)
