"""Per-caller fairness: one key's burst is capped, other keys keep being served, rates are limited
per key, and /metrics names callers by key hash only."""

from __future__ import annotations

import asyncio

import prometheus_client as prom
import pytest
from cursorpipe.server._errors import APIError
from cursorpipe.server._gateway._keys import key_hash, key_label
from cursorpipe.server._gateway._limits import CallerLimits, CallerMetrics

SECRET = "crsr_metrics_secret"
LABEL = key_label(key_hash(SECRET))


async def test_one_callers_burst_does_not_take_every_slot() -> None:
    limits = CallerLimits(concurrency=2, rate_per_min=0, burst=1, queue_timeout_s=0.05)
    release = asyncio.Event()
    admitted: list[str] = []

    async def hold(label: str) -> None:
        async with limits.slot(label):
            admitted.append(label)
            await release.wait()

    burst = [asyncio.create_task(hold("a")) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(APIError) as info:
        async with limits.slot("a"):
            pass
    assert info.value.status == 429 and info.value.code == "key_busy" and info.value.retry_after
    other = asyncio.create_task(hold("b"))
    await asyncio.sleep(0.01)
    assert admitted.count("b") == 1, "another caller is still served while 'a' is at its cap"
    release.set()
    await asyncio.gather(*burst, other)
    async with limits.slot("a"):  # slots come back
        pass


async def test_waiting_request_gets_the_freed_slot() -> None:
    limits = CallerLimits(concurrency=1, rate_per_min=0, burst=1, queue_timeout_s=2)
    order: list[int] = []

    async def run(i: int) -> None:
        async with limits.slot("a"):
            order.append(i)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(run(i) for i in range(3)))
    assert sorted(order) == [0, 1, 2]


async def test_rate_limit_per_key_with_retry_after() -> None:
    now = [1000.0]
    limits = CallerLimits(concurrency=5, rate_per_min=60, burst=2, queue_timeout_s=0, clock=lambda: now[0])
    for _ in range(2):
        async with limits.slot("a"):
            pass
    with pytest.raises(APIError) as info:
        async with limits.slot("a"):
            pass
    assert info.value.status == 429 and info.value.code == "key_rate_limited"
    assert info.value.retry_after == 1
    async with limits.slot("b"):  # other keys have their own bucket
        pass
    now[0] += 1.0
    async with limits.slot("a"):
        pass


async def test_metrics_are_labelled_by_key_hash_only() -> None:
    registry = prom.CollectorRegistry()
    limits = CallerLimits(
        concurrency=1, rate_per_min=0, burst=1, queue_timeout_s=0, metrics=CallerMetrics(registry)
    )
    async with limits.slot(LABEL):
        with pytest.raises(APIError):
            async with limits.slot(LABEL):
                pass
    text = prom.generate_latest(registry).decode()
    assert f'cursorpipe_caller_requests_total{{key="{LABEL}"}} 1.0' in text
    assert f'cursorpipe_caller_rejected_total{{key="{LABEL}",reason="concurrency"}} 1.0' in text
    assert f'cursorpipe_caller_in_flight{{key="{LABEL}"}} 0.0' in text
    assert SECRET not in text and key_hash(SECRET) not in text
