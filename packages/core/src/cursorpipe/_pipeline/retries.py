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
from contextlib import aclosing
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

__all__ = ["Deadline", "RetryPolicy", "Runner", "run_with_retries"]

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

    __slots__ = ("_cancelling", "_fired", "_handle", "_waiting", "expired", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.expired = False
        self._waiting: asyncio.Task[object] | None = None
        self._fired: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self.expired = True
        task = self._waiting
        if task is not None:
            self._fired = task
            self._cancelling = task.cancelling()
            task.cancel()

    def cancel(self) -> None:
        """Disarm the timer (the turn ended)."""
        self._handle.cancel()

    async def next(self, stream: AsyncIterator[Event]) -> Event:
        """The next event of ``stream``; ``TimeoutError`` once the deadline has passed.

        :func:`run_with_retries` does the same inline (issue 16: a coroutine per event): the
        steps are :meth:`enter`, the pull, :meth:`cancelled` on a cancellation, :meth:`leave`."""
        task = self.enter()
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            self.cancelled(task)
            raise
        finally:
            self.leave()

    def enter(self) -> asyncio.Task[object] | None:
        """Before a pull: ``TimeoutError`` if the deadline has passed, else the current task is
        the one the timer interrupts until :meth:`leave` (returned, for :meth:`cancelled`)."""
        if self.expired:
            raise TimeoutError
        task = self._waiting = asyncio.current_task()
        return task

    def cancelled(self, task: asyncio.Task[object] | None) -> None:
        """A pull by ``task`` was cancelled: ``TimeoutError`` if the cancellation was this timer's
        alone (else the caller re-raises the cancellation)."""
        if self._fired is task and self._undo():
            raise TimeoutError from None

    def leave(self) -> None:
        """After a pull: the timer no longer interrupts; its late cancellation is withdrawn."""
        self._waiting = None
        if self._fired is not None:
            self._undo()

    def _undo(self) -> bool:
        """Withdraw this timer's cancellation; True when no other cancellation is pending."""
        task, self._fired = self._fired, None
        return task is not None and task.uncancel() <= self._cancelling


async def run_with_retries(
    run: Runner,
    request: TurnRequest,
    *,
    session: TransportSession | None = None,
    policy: RetryPolicy,
    transport: str,
) -> AsyncGenerator[Event, None]:
    """Run ``request`` on ``run`` (named ``transport`` in errors and logs) with retries and the
    turn's deadline. ``TokenCountDelta`` events pass only when ``max_tokens`` is set: the output
    limiter is their one reader, so a turn without that limit needs no limiter stage to drop them."""
    drop_counts = request.max_tokens is None
    loop = asyncio.get_running_loop()
    timeout_s = request.timeout_s or policy.default_timeout_s
    deadline = Deadline(loop.time() + timeout_s)
    run_id = request.run_id or str(uuid.uuid4())
    attempt = 0
    try:
        while True:
            produced = False
            request = replace(request, run_id=run_id, attempt=attempt)
            try:
                async with aclosing(run(request, session=session)) as stream:
                    pull = stream.__anext__
                    while True:
                        try:
                            # Deadline.next inline (issue 16: no coroutine object per event).
                            task = deadline.enter()
                            try:
                                event = await pull()
                            except asyncio.CancelledError:
                                deadline.cancelled(task)
                                raise
                            finally:
                                deadline._waiting = None
                                if deadline._fired is not None:
                                    deadline.leave()
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
