"""The stop-sequence stage of the Messages route: Anthropic reports *which* stop sequence ended an
answer (``stop_reason: "stop_sequence"``, ``stop_sequence: "..."``), which the core's output
limiter does not say, so this route applies the request's stop sequences itself, with the core's
own :class:`~cursorpipe._limits.OutputLimiter` (one cutting rule), and remembers the match.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from ..._limits import OutputLimiter
from ...types import Event, TextDelta, TurnEnd, Usage, estimate_tokens

__all__ = ["StopSequences"]


class StopSequences:
    """Ends a turn at the first of ``stops`` in the answer text; :attr:`matched` then names it.

    The text before the match is forwarded, the match and everything after it never are, and the
    upstream run is closed (which cancels it) as soon as the match is seen. The turn then ends with
    ``TurnEnd("stop")`` and an estimated usage, since Cursor reports none for a cancelled run.
    """

    def __init__(self, stops: Sequence[str], prompt_tokens: int) -> None:
        self.stops = tuple(s for s in stops if s)
        self.matched: str | None = None
        self._prompt_tokens = prompt_tokens

    def _which(self, seen: str, emitted: int) -> str:
        """The stop sequence at the cut, ``emitted`` characters into the answer (the shortest of
        those starting there: it was complete first while the text streamed)."""
        tail = seen[emitted:]
        return min((s for s in self.stops if tail.startswith(s)), key=len)

    async def apply(self, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        """``events`` with the stop sequences applied."""
        limiter = OutputLimiter(self.stops)
        seen: list[str] = []
        emitted = 0
        async with aclosing(events) as stream:
            async for event in stream:
                if isinstance(event, TextDelta) and not event.notice:
                    seen.append(event.text)
                    text, done = limiter.feed(event.text)
                    emitted += len(text)
                    if text:
                        yield TextDelta(text)
                    if done:
                        break
                    continue
                if isinstance(event, TurnEnd):
                    rest = limiter.flush()
                    if rest:
                        yield TextDelta(rest)
                yield event
                if isinstance(event, TurnEnd):
                    return
        if limiter.reason is None:
            return  # the source ended without a TurnEnd: nothing to add
        answer = "".join(seen)
        self.matched = self._which(answer, emitted)
        usage = Usage(
            input_tokens=self._prompt_tokens,
            output_tokens=estimate_tokens(answer[:emitted]),
            estimated=True,
        )
        yield TurnEnd("stop", usage)
