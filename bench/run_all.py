"""Run every ``bench/bench_*.py`` and write ``bench/RESULTS.md`` with the machine's details.

    python3 dev.py bench            # all benchmarks
    python3 dev.py bench connect    # only those whose name contains "connect"

Each benchmark prints Markdown (tables of min/median/max over repeated runs, ratios and
differences measured side by side in one run). Nothing here asserts on absolute times.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _machine() -> list[str]:
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = "unknown"
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        rev = "unknown"
    return [
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {rev or 'unknown'}",
        f"- machine: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
    ]


def main(argv: list[str]) -> int:
    selected = [a for a in argv if not a.startswith("-")]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not selected or any(s in p.stem for s in selected))
    if not scripts:
        print("no benchmark matched", file=sys.stderr)
        return 2
    out = ["# Benchmark results", "", *_machine(), ""]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        took = time.perf_counter() - start
        sys.stdout.write(proc.stdout)
        out += [f"## {script.stem.removeprefix('bench_')}", "", f"_`{script.name}`, {took:.1f} s_", ""]
        if proc.returncode != 0:
            failed += 1
            sys.stderr.write(proc.stderr[-4000:])
            out += [
                f"**failed** (exit {proc.returncode}):",
                "",
                "```",
                proc.stderr[-2000:].strip(),
                "```",
                "",
            ]
        else:
            out += [proc.stdout.strip(), ""]
    (HERE / "RESULTS.md").write_text("\n".join(out) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
