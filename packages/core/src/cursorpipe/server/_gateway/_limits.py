"""Per-caller fairness: a concurrency cap and a request rate per key hash, reported in /metrics by
the short key hash only.

The server-wide gate (``CURSORPIPE_MAX_CONCURRENCY``) still bounds the whole replica; the per-key
cap is below it, so one caller's burst can hold at most its own share of the slots and the others
keep getting served. The rate limit is a token bucket (``per_key_rate_per_min`` requests a minute,
bursts up to ``per_key_burst``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .._errors import APIError

__all__ = ["CallerLimits", "CallerMetrics"]

#: Key hashes whose bucket and counters are idle this long are forgotten (bounded memory).
_FORGET_AFTER_S = 3600.0


class CallerMetrics:
    """``cursorpipe_caller_*`` series in the app's Prometheus registry, labelled by key hash."""

    def __init__(self, registry: Any | None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        import prometheus_client as prom

        self.requests = prom.Counter(
            "cursorpipe_caller_requests", "Requests admitted, by caller key hash", ["key"], registry=registry
        )
        self.rejected = prom.Counter(
            "cursorpipe_caller_rejected",
            "Requests refused by the per-caller limits, by key hash and reason",
            ["key", "reason"],
            registry=registry,
        )
        self.in_flight = prom.Gauge(
            "cursorpipe_caller_in_flight", "Requests running now, by key hash", ["key"], registry=registry
        )

    def admitted(self, label: str) -> None:
        if self.enabled:
            self.requests.labels(label).inc()
            self.in_flight.labels(label).inc()

    def finished(self, label: str) -> None:
        if self.enabled:
            self.in_flight.labels(label).dec()

    def refused(self, label: str, reason: str) -> None:
        if self.enabled:
            self.rejected.labels(label, reason).inc()


@dataclass(eq=False)
class _Key:
    slots: asyncio.Semaphore
    tokens: float
    stamp: float
    """When the bucket was last refilled."""
    used: float
    running: int = 0


class CallerLimits:
    """``async with limits.slot(label):`` around one request of the caller ``label``."""

    def __init__(
        self,
        *,
        concurrency: int,
        rate_per_min: float,
        burst: int,
        queue_timeout_s: float,
        metrics: CallerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.rate_per_s = rate_per_min / 60.0
        self.burst = max(1, burst)
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics or CallerMetrics(None)
        self._clock = clock
        self._keys: dict[str, _Key] = {}

    def _key(self, label: str) -> _Key:
        state = self._keys.get(label)
        if state is None:
            self._forget_idle()
            now = self._clock()
            state = self._keys[label] = _Key(asyncio.Semaphore(self.concurrency), float(self.burst), now, now)
        return state

    def _forget_idle(self) -> None:
        now = self._clock()
        for label in [k for k, s in self._keys.items() if not s.running and now - s.used > _FORGET_AFTER_S]:
            del self._keys[label]

    def _take_token(self, state: _Key, label: str) -> None:
        if self.rate_per_s <= 0:
            return
        now = self._clock()
        state.tokens = min(float(self.burst), state.tokens + (now - state.stamp) * self.rate_per_s)
        state.stamp = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return
        wait = (1.0 - state.tokens) / self.rate_per_s
        self.metrics.refused(label, "rate")
        raise APIError(
            429,
            f"Too many requests with this key: at most {self.rate_per_s * 60:g} a minute "
            "(CURSORPIPE_PER_KEY_RATE_PER_MIN). Retry after the time in Retry-After.",
            type="rate_limit_error",
            code="key_rate_limited",
            retry_after=math.ceil(wait),
            should_retry=True,
        )

    @asynccontextmanager
    async def slot(self, label: str) -> AsyncIterator[None]:
        """Admit one request of ``label`` or raise a 429 :class:`APIError` with Retry-After."""
        state = self._key(label)
        self._take_token(state, label)
        try:
            if state.slots.locked() and self.queue_timeout_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(self.queue_timeout_s):
                await state.slots.acquire()
        except TimeoutError:
            self.metrics.refused(label, "concurrency")
            raise APIError(
                429,
                f"This key already has {self.concurrency} requests running "
                "(CURSORPIPE_PER_KEY_CONCURRENCY); retry when one has finished.",
                type="rate_limit_error",
                code="key_busy",
                retry_after=1,
                should_retry=True,
            ) from None
        state.running += 1
        self.metrics.admitted(label)
        try:
            yield
        finally:
            state.running -= 1
            state.used = self._clock()
            state.slots.release()
            self.metrics.finished(label)
