"""The concurrency gate: at most ``max_concurrency`` upstream runs, a bounded wait for a slot,
then 429; 503 while draining (integrations.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from .._constants import SERVER_BUSY_RETRY_AFTER_S
from ._errors import APIError

__all__ = ["Gate", "draining_error", "stream_shutdown_error"]


class Gate:
    """At most ``limit`` upstream runs at once (a request with ``n`` choices takes ``n`` slots);
    others wait, first come first served, up to ``queue_timeout_s`` and then get 429 with
    Retry-After. While draining every new request gets 503 with Retry-After."""

    def __init__(self, limit: int, queue_timeout_s: float) -> None:
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self.in_use = 0
        self.draining = False
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _busy(self) -> APIError:
        return APIError(
            429,
            f"cursorpipe-server is busy: {self.limit} runs are already going "
            f"(CURSORPIPE_MAX_CONCURRENCY) and no slot freed up within {self.queue_timeout_s:g} s. "
            "Retry shortly.",
            type="rate_limit_error",
            code="server_busy",
            retry_after=SERVER_BUSY_RETRY_AFTER_S,
            should_retry=True,
        )

    async def acquire(self, weight: int = 1) -> None:
        """Take ``weight`` slots or raise the 400/429/503 :class:`APIError`."""
        if self.draining:
            raise draining_error()
        if weight > self.limit:
            raise APIError(
                400,
                f"n={weight} needs {weight} parallel runs but this server runs at most {self.limit} "
                "(CURSORPIPE_MAX_CONCURRENCY).",
                param="n",
                code="invalid_value",
                should_retry=False,
            )
        if not self._waiters and self.in_use + weight <= self.limit:
            self.in_use += weight
            return
        if self.queue_timeout_s <= 0:
            raise self._busy()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.release(weight)  # granted in the same instant the wait ended: give it back
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            self._grant()

    def release(self, weight: int = 1) -> None:
        """Give ``weight`` slots back."""
        self.in_use -= weight
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            weight, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()
                continue
            if self.in_use + weight > self.limit:
                return  # strict order: a big request is not starved by small ones behind it
            self._waiters.popleft()
            self.in_use += weight
            granted.set_result(None)


def stream_shutdown_error() -> APIError:
    """Ends a stream still open when the drain time is up."""
    return APIError(
        503,
        "cursorpipe-server shut down before this answer was complete; retry the request.",
        type="server_error",
        code="shutting_down",
        should_retry=True,
    )


def draining_error() -> APIError:
    """503 while the server shuts down (clients retry against another instance or later)."""
    return APIError(
        503,
        "cursorpipe-server is shutting down and takes no new requests.",
        type="server_error",
        code="shutting_down",
        retry_after=SERVER_BUSY_RETRY_AFTER_S,
        should_retry=True,
    )
