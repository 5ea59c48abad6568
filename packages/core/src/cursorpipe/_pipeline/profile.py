"""The profiling stage (``enable_profiling``): time to first chunk and the gaps between chunks,
logged on ``cursorpipe.profile``. Only in the pipeline when profiling is on."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from ..types import Event, TextDelta, ThinkingDelta, TurnRequest

__all__ = ["profiled"]

profile_log = logging.getLogger("cursorpipe.profile")


async def profiled(stream: AsyncGenerator[Event, None], request: TurnRequest) -> AsyncGenerator[Event, None]:
    """Pass ``stream`` through and log its timing when it ends."""
    start = time.perf_counter()
    last = start
    first: float | None = None
    gaps: list[float] = []
    chunks = 0
    try:
        async with aclosing(stream) as events:
            async for event in events:
                now = time.perf_counter()
                if isinstance(event, (TextDelta, ThinkingDelta)):
                    chunks += 1
                    if first is None:
                        first = now - start
                        profile_log.info("ttfc model=%s %.1f ms", request.model, first * 1000)
                    else:
                        gaps.append(now - last)
                    last = now
                yield event
    finally:
        total = time.perf_counter() - start
        profile_log.info(
            "turn model=%s total=%.1f ms ttfc=%s chunks=%d max_gap=%.1f ms mean_gap=%.1f ms",
            request.model,
            total * 1000,
            f"{first * 1000:.1f} ms" if first is not None else "n/a",
            chunks,
            max(gaps, default=0.0) * 1000,
            (sum(gaps) / len(gaps) * 1000) if gaps else 0.0,
        )
