"""The benchmark runner: its merge/ratio arithmetic, and an end-to-end smoke run against a baseline.

No assertion here is about how fast anything is; only that the runner measures both checkouts and
prints what it promises.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Captured at collection, before the root conftest points HOME at a temporary directory: the smoke
#: run must reuse uv's real cache instead of downloading every wheel again.
_REAL_HOME = os.environ.get("HOME", "")


def _bench_util() -> ModuleType:
    """``bench/_util.py`` (the benchmarks are scripts, not a package)."""
    name = "_cursorpipe_bench_util"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "_util.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while building the class
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_medians_merge_samples_and_resolve_differences() -> None:
    util = _bench_util()
    metrics = [
        util.Metric("turn", "ms", "lower", [10.0, 30.0, 20.0]),
        util.Metric("floor", "ms", "lower", [4.0, 6.0, 5.0, 100.0]),
        util.Metric("overhead", "ms", "lower", diff=("turn", "floor")),
    ]
    figures = util.medians(metrics)
    assert figures["turn"] == (10.0, 20.0, 30.0, 3)
    assert figures["floor"][1] == 5.5
    assert figures["overhead"][1] == pytest.approx(14.5)  # a difference of medians


def test_compare_table_prints_ratios_and_marks_direction() -> None:
    util = _bench_util()
    base = [
        util.Metric("latency", "ms", "lower", [10.0, 10.0]),
        util.Metric("throughput", "req/s", "higher", [100.0]),
        util.Metric("rss", "MiB", "lower", [50.0]),
    ]
    new = [
        util.Metric("latency", "ms", "lower", [5.0, 5.0]),
        util.Metric("throughput", "req/s", "higher", [80.0]),
        util.Metric("rss", "MiB", "lower", [51.0]),
    ]
    rows = {line.split(" | ")[0].strip("| "): line for line in util.render_compare(base, new).splitlines()}
    assert rows["latency"].endswith("| 0.50 better |")
    assert rows["throughput"].endswith("| 0.80 worse |")
    assert rows["rss"].endswith("| 1.02 |")  # within 10 %: no verdict


def test_targets_table_reports_met_unmet_and_missing() -> None:
    util = _bench_util()
    spec = importlib.util.spec_from_file_location("_cursorpipe_bench_run_all", ROOT / "bench" / "run_all.py")
    assert spec and spec.loader
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    cold = "connect (emulator), cold: process start to first token"
    acp = "pool 32, 1 concurrent: client CPU per request"
    base = {acp: util.Metric(acp, "ms", "lower", [1.0, 1.0])}
    new = {
        cold: util.Metric(cold, "ms", "lower", [350.0, 390.0]),
        acp: util.Metric(acp, "ms", "lower", [0.6]),
    }
    rows = {line.split(" | ")[0].strip("| "): line for line in run_all.targets_table(base, new).splitlines()}
    assert rows["cold start to first token on connect (emulator) <= 400 ms"].endswith("| 370.0 ms | met |")
    assert "0.60x" in rows["acp client CPU per request <= 0.5x baseline at 1 concurrent"]
    assert rows["acp client CPU per request <= 0.5x baseline at 1 concurrent"].endswith("| **not met** |")
    assert "not measured in this run" in rows["server memory per open stream <= 16 KiB (RSS, 64 held open)"]


@pytest.mark.slow
def test_baseline_run_measures_both_checkouts_and_prints_ratios(tmp_path: Path) -> None:
    env = dict(os.environ)
    if _REAL_HOME:
        uv = ROOT / ".tools" / "bin" / "uv"
        cache = subprocess.run(
            [str(uv) if uv.exists() else "uv", "cache", "dir"],
            env=dict(os.environ, HOME=_REAL_HOME),
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if cache:
            env["UV_CACHE_DIR"] = cache
    results = ROOT / "bench" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    trees = tmp_path / "trees"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run_all.py"),
        "--baseline",
        "HEAD",
        "--quick",
        "--rounds",
        "1",
        "--no-write",
        "--cleanup",
        "--trees-dir",
        str(trees),
        "codec",
        "connect",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert (
        out.count("| measure | unit | baseline median (min-max) | new median (min-max) | new / baseline |")
        == 2
    )
    assert "baseline round 1" in out and "new round 1" in out
    # A ratio beside both absolute figures, for a wall-clock and a CPU measure.
    number = r"[\d,.]+ \([\d,.]+-[\d,.]+\)"
    for measure in ("connect h2 Run: turn total", "connect h2 Run: client CPU per turn"):
        assert re.search(rf"\| {re.escape(measure)} \| ms [^|]*\| {number} \| {number} \| \d+\.\d\d", out), (
            measure
        )
    # --cleanup removed the worktree; --no-write left RESULTS.md alone.
    assert not any(trees.glob("*/.git"))
    assert (
        str(trees)
        not in subprocess.run(
            ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
    assert (results.read_bytes() if results.exists() else None) == before
