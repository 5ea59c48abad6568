"""Small helpers shared by the benchmark scripts (timing statistics and Markdown tables)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def stats(samples: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max) of ``samples``."""
    return min(samples), statistics.median(samples), max(samples)


def ms(value: float) -> str:
    """Seconds as a millisecond string."""
    return f"{value * 1000:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rss_mib(pid: int | None = None) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
