"""Helpers shared by the benchmark scripts: a metric recorder, CPU/RSS probes and Markdown tables.

Every ``bench_*.py`` measures the ``cursorpipe`` of the interpreter running it, so the same script
measures any checkout when started with that checkout's ``.venv/bin/python`` (``run_all.py --tree``
and ``--baseline`` rely on this). A script records its figures in a :class:`Recorder`; on exit the
recorder prints a Markdown table, and when ``BENCH_JSON`` names a file it also writes the raw
samples there so ``run_all.py`` can merge several rounds and compare two checkouts.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Set by ``run_all.py``: where to write the raw samples, and whether to run a minimal amount.
ENV_JSON = "BENCH_JSON"
ENV_QUICK = "BENCH_QUICK"

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def quick() -> bool:
    """True for a smoke run (``run_all.py --quick``): every benchmark does the least that still
    exercises each path once or twice."""
    return os.environ.get(ENV_QUICK) == "1"


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


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process so far, all its threads.

    On Linux this reads the process's own CPU clock, in nanoseconds: the clock id that
    ``clock_getcpuclockid(3)`` returns for ``pid`` is ``(~pid << 3) | 2`` (the kernel's
    process-wide scheduler clock), which Python's ``time.clock_gettime`` accepts. Elsewhere, or if
    the kernel refuses, ``/proc/<pid>/stat``'s clock ticks (10 ms: a figure per request then needs
    hundreds of requests, and a ratio of two small figures moves by whole ticks)."""
    if sys.platform == "linux":
        try:
            return time.clock_gettime((~pid << 3) | 2)
        except OSError:
            pass
    with open(f"/proc/{pid}/stat") as fh:
        # The command name (field 2) may contain spaces; the fields after its ')' are fixed.
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (the per-request ``agent --print``)."""
    t = os.times()
    return t.children_user + t.children_system


def import_first(*candidates: str) -> Any:
    """The first of ``module`` or ``module:attr`` paths that imports, so one script can measure a
    checkout before and after a private module moved. Raises the last ImportError if none does."""
    error: Exception | None = None
    for candidate in candidates:
        module, _, attr = candidate.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            return getattr(obj, attr) if attr else obj
        except (ImportError, AttributeError) as exc:
            error = exc
    raise ImportError(f"none of {candidates} is importable: {error}")


@dataclass
class Metric:
    key: str
    unit: str
    better: str  # "lower" or "higher"
    samples: list[float] = field(default_factory=list)
    #: For a derived metric: median(samples of diff[0]) - median(samples of diff[1]), computed after
    #: every round is merged (a difference of medians, not a median of differences).
    diff: tuple[str, str] | None = None


class Recorder:
    """The figures of one benchmark run, in the order they were first recorded."""

    def __init__(self, bench: str, title: str) -> None:
        self.bench = bench
        self.title = title
        self.metrics: dict[str, Metric] = {}
        self.notes: list[str] = []
        self.started = time.perf_counter()

    def add(self, key: str, values: float | Sequence[float], unit: str, better: str = "lower") -> None:
        """Samples of a measured figure (seconds are given in ms already: units are as printed)."""
        metric = self.metrics.setdefault(key, Metric(key, unit, better))
        metric.samples.extend([values] if isinstance(values, (int, float)) else values)

    def add_diff(self, key: str, minuend: str, subtrahend: str, unit: str) -> None:
        """A figure derived from two others (e.g. transport minus floor)."""
        self.metrics[key] = Metric(key, unit, "lower", diff=(minuend, subtrahend))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> None:
        """Print the Markdown report, and write the raw samples for ``run_all.py`` if asked."""
        print(self.title + "\n")
        print(render_single(list(self.metrics.values())))
        for text in self.notes:
            print("\n" + text)
        path = os.environ.get(ENV_JSON)
        if path:
            import cursorpipe

            payload = {
                "bench": self.bench,
                "title": self.title,
                "cursorpipe_file": cursorpipe.__file__,
                "python": sys.executable,
                "seconds": time.perf_counter() - self.started,
                "notes": self.notes,
                "metrics": [
                    {"key": m.key, "unit": m.unit, "better": m.better, "samples": m.samples, "diff": m.diff}
                    for m in self.metrics.values()
                ],
            }
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(payload, fh)


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


NAN4 = (float("nan"), float("nan"), float("nan"), 0)


def medians(metrics: Sequence[Metric]) -> dict[str, tuple[float, float, float, int]]:
    """(min, median, max, n) of every metric, resolving derived ones from their operands."""
    out: dict[str, tuple[float, float, float, int]] = {}
    by_key = {m.key: m for m in metrics}
    for m in metrics:
        if m.diff is None and m.samples:
            lo, med, hi = stats(m.samples)
            out[m.key] = (lo, med, hi, len(m.samples))
        elif m.diff is None:
            out[m.key] = NAN4
    for m in metrics:
        if m.diff is not None:
            a, b = (by_key.get(k) for k in m.diff)
            if a and b and a.samples and b.samples:
                value = statistics.median(a.samples) - statistics.median(b.samples)
                out[m.key] = (value, value, value, min(len(a.samples), len(b.samples)))
            else:
                out[m.key] = NAN4
    return out


def render_single(metrics: Sequence[Metric]) -> str:
    figures = medians(metrics)
    rows = []
    for m in metrics:
        lo, med, hi, n = figures[m.key]
        spread = "(derived)" if m.diff else f"{fmt(lo)} / {fmt(hi)}"
        rows.append([m.key, m.unit, fmt(med), spread, n])
    return table(["measure", "unit", "median", "min / max", "n"], rows)


def render_compare(base: Sequence[Metric], new: Sequence[Metric]) -> str:
    """Baseline and new side by side with the ratio new / baseline of the medians (for a derived
    difference the ratio is of the two differences; `better` says which direction is good)."""
    fb, fn = medians(base), medians(new)
    keys = [m.key for m in new] + [m.key for m in base if m.key not in {x.key for x in new}]
    info = {m.key: m for m in [*base, *new]}
    rows = []
    for key in keys:
        m = info[key]
        b, n = fb.get(key, NAN4), fn.get(key, NAN4)
        ratio = n[1] / b[1] if b[1] > 0 and n[1] == n[1] else float("nan")  # NaN > 0 is False
        mark = ""
        if ratio == ratio:
            good = ratio < 1 if m.better == "lower" else ratio > 1
            mark = (
                " better" if good and abs(ratio - 1) >= 0.1 else (" worse" if abs(ratio - 1) >= 0.1 else "")
            )
        rows.append(
            [
                key,
                m.unit + (" (lower is better)" if m.better == "lower" else " (higher is better)"),
                f"{fmt(b[1])} ({fmt(b[0])}-{fmt(b[2])})" if m.diff is None else fmt(b[1]),
                f"{fmt(n[1])} ({fmt(n[0])}-{fmt(n[2])})" if m.diff is None else fmt(n[1]),
                f"{ratio:.2f}{mark}" if ratio == ratio else "-",
            ]
        )
    return table(
        ["measure", "unit", "baseline median (min-max)", "new median (min-max)", "new / baseline"], rows
    )
