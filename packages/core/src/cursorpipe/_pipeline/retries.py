"""The retry stage: run one turn on a transport, retry a retryable failure before any output,
and bound the whole turn by its deadline.

Every attempt of a turn keeps the turn's ``run_id`` and counts up ``attempt`` (live-dialect.md
row 17: only ``x-request-id`` changes between retries). A failure after the first content event is
never retried, since the caller has already seen part of an answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol

from .._constants import RETRY_AFTER_MAX_WAIT_S, RETRY_BACKOFF_BASE_S, RETRY_BACKOFF_MAX_S, RETRY_JITTER
from ..errors import AgentTimeoutError, CursorPipeError
from ..transports.base import TransportSession
from ..types import (
    Event,
    TextDelta,
    ThinkingDelta,
    TokenCountDelta,
    ToolCallDelta,
    ToolCallEvent,
    TurnRequest,
)

__all__ = ["Deadline", "DeadlineWatch", "RetryPolicy", "Runner", "run_with_retries"]

log = logging.getLogger("cursorpipe")

#: Events that show the caller part of an answer: after one of them a failure is not retried.
_CONTENT_EVENTS = (TextDelta, ThinkingDelta, ToolCallDelta, ToolCallEvent)


class Runner(Protocol):
    """What a stage runs a turn on: ``Transport.run`` or another stage with its signature."""

    def __call__(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a turn may be tried (from the client's configuration)."""

    max_retries: int
    default_timeout_s: float

    def delay(self, exc: CursorPipeError, attempt: int, produced: bool, remaining: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when ``exc`` must be raised."""
        if produced or not exc.retryable or attempt >= self.max_retries:
            return None
        if exc.retry_after is not None:
            wait = exc.retry_after
            if wait > RETRY_AFTER_MAX_WAIT_S:
                return None
        else:
            base = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * (2**attempt))
            wait = base * (1 + random.uniform(0, RETRY_JITTER))  # noqa: S311 - jitter, not crypto
        if wait >= remaining:
            return None
        return wait


class Deadline:
    """One timer for a whole turn, armed once, instead of an ``asyncio.timeout`` scope around every
    event (issue 16: a scope per event was a tenth of the client's CPU per request).

    The timer only cancels a task that is waiting in :meth:`next`; a deadline that passes while the
    consumer holds an event is reported at the consumer's next pull. The cancellation is undone
    with ``Task.uncancel`` the way ``asyncio.Timeout`` does it, so a cancellation from outside that
    arrives at the same time still propagates.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_waiting", "_watch", "expired", "when")

    def __init__(self, when: float, watch: DeadlineWatch | None = None) -> None:
        self.when = when
        self.expired = False
        self._waiting: asyncio.Task[object] | None = None
        self._fired: asyncio.Task[object] | None = None
        self._cancelling = 0
        loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._watch = watch if watch is not None and watch.bind(loop) else None
        if self._watch is not None:
            self._watch.add(self, loop)
        else:
            self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        task = self._waiting
        if task is not None:
            self._fired = task
            self._cancelling = task.cancelling()
            task.cancel()

    def cancel(self) -> None:
        """Disarm the timer (the turn ended)."""
        if self._watch is not None:
            self._watch.discard(self)
        elif self._handle is not None:
            self._handle.cancel()

    async def next(self, stream: AsyncIterator[Event]) -> Event:
        """The next event of ``stream``; ``TimeoutError`` once the deadline has passed."""
        if self.expired:
            raise TimeoutError
        task = asyncio.current_task()
        self._waiting = task
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            if self._fired is task and self._undo():
                raise TimeoutError from None
            raise
        finally:
            self._waiting = None
            if self._fired is not None:
                self._undo()

    def _undo(self) -> bool:
        """Withdraw this timer's cancellation; True when no other cancellation is pending."""
        task, self._fired = self._fired, None
        return task is not None and task.uncancel() <= self._cancelling


class DeadlineWatch:
    """One timer for the deadlines of every turn of a pipeline, armed for the earliest and moved
    only when it fires (issue 16: a timer per turn was a heap push and a cancelled handle per
    request). A deadline made on another event loop than the first one keeps its own timer."""

    __slots__ = ("_deadlines", "_loop", "_timer")

    def __init__(self) -> None:
        self._deadlines: set[Deadline] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether deadlines on ``loop`` can use this watch (it serves the first loop it sees)."""
        if self._loop is None or (self._loop.is_closed() and not self._deadlines):
            self._loop, self._timer = loop, None
        return self._loop is loop

    def add(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``deadline`` (``loop`` is the bound one)."""
        self._deadlines.add(deadline)
        timer = self._timer
        if timer is None or timer.when() > deadline.when:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline.when, self._check, loop)

    def discard(self, deadline: Deadline) -> None:
        """Stop watching ``deadline`` (the timer stays for the others; it re-arms when it fires)."""
        self._deadlines.discard(deadline)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        earliest: float | None = None
        for deadline in list(self._deadlines):
            if deadline.when <= now:
                self._deadlines.discard(deadline)
                deadline._fire()
            elif earliest is None or deadline.when < earliest:
                earliest = deadline.when
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._check, loop)


async def run_with_retries(
    run: Runner,
    request: TurnRequest,
    *,
    session: TransportSession | None = None,
    policy: RetryPolicy,
    transport: str,
    deadlines: DeadlineWatch | None = None,
) -> AsyncGenerator[Event, None]:
    """Run ``request`` on ``run`` (named ``transport`` in errors and logs) with retries and the
    turn's deadline (timed by ``deadlines`` when given, shared by the pipeline's turns).
    ``TokenCountDelta`` events pass only when ``max_tokens`` is set: the output limiter is their
    one reader, so a turn without that limit needs no limiter stage to drop them."""
    drop_counts = request.max_tokens is None
    loop = asyncio.get_running_loop()
    timeout_s = request.timeout_s or policy.default_timeout_s
    deadline = Deadline(loop.time() + timeout_s, deadlines)
    run_id = request.run_id or str(uuid.uuid4())
    attempt = 0
    try:
        while True:
            produced = False
            if request.run_id != run_id or request.attempt != attempt:
                request = replace(request, run_id=run_id, attempt=attempt)
            try:
                stream = run(request, session=session)
                try:  # contextlib.aclosing's close, without its calls (issue 16)
                    while True:
                        try:
                            event = await deadline.next(stream)
                        except StopAsyncIteration:
                            break
                        except CursorPipeError:
                            # A transport's own timeout errors (StreamStalledError is a
                            # TimeoutError too) are not this deadline: keep them as they are.
                            raise
                        except TimeoutError as exc:
                            raise AgentTimeoutError(
                                f"No complete answer from {request.model!r} within {timeout_s:g} s. Raise "
                                "timeout_s (or CURSORPIPE_REQUEST_TIMEOUT_S) or ask for a shorter answer.",
                                transport=transport,
                            ) from exc
                        if drop_counts and type(event) is TokenCountDelta:
                            continue
                        if not produced and isinstance(event, _CONTENT_EVENTS):
                            produced = True
                        yield event
                finally:
                    await stream.aclose()
                return
            except CursorPipeError as exc:
                if exc.transport is None:
                    exc.transport = transport
                wait = policy.delay(exc, attempt, produced, deadline.when - loop.time())
                if wait is None:
                    raise
                attempt += 1
                log.warning(
                    "cursorpipe: %s on %s (attempt %d), retrying in %.2f s",
                    exc.code,
                    transport,
                    attempt,
                    wait,
                )
                await asyncio.sleep(wait)
    finally:
        deadline.cancel()
