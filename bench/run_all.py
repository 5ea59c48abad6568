"""Run the benchmarks, alone or against a baseline checkout, and write ``bench/RESULTS.md``.

    python3 dev.py bench                       # every benchmark, this checkout
    python3 dev.py bench connect server        # only those whose name contains a word given
    python3 dev.py bench --baseline            # this checkout vs DEFAULT_BASELINE, side by side
    python3 dev.py bench --baseline main~3     # ... vs any git ref
    python3 dev.py bench --tree ../other       # measure another checkout (its .venv) alone
    python3 dev.py bench --baseline HEAD --quick --no-write   # a smoke run (about a minute)

Every ``bench_*.py`` measures the ``cursorpipe`` of the interpreter that runs it, so a checkout is
measured by running the same script with that checkout's ``.venv/bin/python``. With
``--baseline REF`` a git worktree of REF is created (under ``--trees-dir``, reused across runs)
with its own ``.venv`` (``uv sync`` from its own ``uv.lock``, sharing uv's cache), and each
benchmark runs ``--rounds`` times per checkout, interleaved and alternating which goes first
(baseline, new, new, baseline, ...), so that drift in the machine's load hits both alike. The
samples of all rounds are merged and the tables show both medians and the ratio new / baseline.
Nothing here asserts on times.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _util import ENV_JSON, ENV_QUICK, Metric, fmt, medians, render_compare, render_single, table  # noqa: E402

#: The default baseline: main's head before issue 16's speed work started ("Adapters: session_id
#: reads SessionBinding.session_id ..."). Override with ``--baseline REF``.
DEFAULT_BASELINE = "233de5c"
#: Where baseline worktrees live (one per commit, reused): override with ``--trees-dir`` or this.
ENV_TREES = "CURSORPIPE_BENCH_TREES"
BIN = "Scripts" if os.name == "nt" else "bin"


#: Issue 16's targets, checked against the merged medians of a run with ``--baseline``:
#: (what, metric key, "max" = new median at most the figure, "ratio_max"/"ratio_min" = new / baseline).
TARGETS: list[tuple[str, str, str, float]] = [
    (
        "cold start to first token on connect (emulator) <= 400 ms",
        "connect (emulator), cold: process start to first token",
        "max",
        400.0,
    ),
    (
        "`import cursorpipe` <= 100 ms (importtime cumulative)",
        "import cursorpipe: importtime cumulative",
        "max",
        100.0,
    ),
    (
        "`import langchain_cursorpipe` adds <= 100 ms over langchain_core",
        "import langchain_cursorpipe, over langchain_core: importtime cumulative",
        "max",
        100.0,
    ),
    (
        "`import llama_index.llms.cursorpipe` adds <= 100 ms over llama_index.core",
        "import llama_index.llms.cursorpipe, over llama_index.core: importtime cumulative",
        "max",
        100.0,
    ),
    (
        "client RSS after one connect turn <= 50 MB (47.7 MiB)",
        # A venv with only cursorpipe and its dependencies: the dev venv's figure also holds what
        # httpx imports from dev tools when installed (rich, click, pygments; bench_cold_start.py).
        "connect (emulator, user venv), cold: RSS after the turn",
        "max",
        50e6 / 2**20,
    ),
    (
        "connect overhead over the floor <= +1.0 ms on h2",
        "overhead over the floor, h2 Run (paired turns)",
        "max",
        1.0,
    ),
    (
        "connect overhead over the floor <= +2.0 ms on RunSSE",
        "overhead over the floor, RunSSE (paired turns)",
        "max",
        2.0,
    ),
    *[
        (
            f"acp client CPU per request <= 0.5x baseline at {c} concurrent",
            f"pool 32, {c} concurrent: client CPU per request",
            "ratio_max",
            0.5,
        )
        for c in (1, 8, 32)
    ],
    (
        "acp throughput at 32 concurrent >= 1.6x baseline",
        "pool 32, 32 concurrent: throughput",
        "ratio_min",
        1.6,
    ),
    (
        "subprocess adds <= 5 ms over a bare `agent --print` at 1 concurrent",
        "subprocess minus bare print, 1 concurrent, paired",
        "max",
        5.0,
    ),
    (
        "server adds <= 1 ms time to first token at 1 stream",
        "added by the server, streaming, 1 concurrent: time to first token",
        "max",
        1.0,
    ),
    *[
        (
            f"server CPU per request <= 0.5x baseline, {mode}, {c} concurrent",
            f"server {mode}, {c} concurrent: server CPU per request",
            "ratio_max",
            0.5,
        )
        for mode in ("streaming", "non-streaming")
        for c in (1, 16, 64)
    ],
    # Two readings of one target (bench_server.py): the Python objects a held-open stream keeps
    # (tracemalloc, exact, includes uvicorn's and Starlette's share) and the RSS growth with 64
    # streams held open (what the OS sees; after a warm-up, pages the allocator kept are reused).
    # The older row (peak RSS during the throughput runs minus idle, / 64) is still printed, but it
    # mostly tracks the allocator's high-water mark under load, not what an open stream holds.
    (
        "server memory per open stream <= 16 KiB (Python objects, tracemalloc, 64 held open)",
        "server Python memory per open stream, 64 held open (tracemalloc)",
        "max",
        16.0,
    ),
    (
        "server memory per open stream <= 16 KiB (RSS, 64 held open)",
        "server RSS per open stream, 64 held open",
        "max",
        16.0,
    ),
]


def targets_table(base: dict[str, Metric], new: dict[str, Metric]) -> str:
    """Each target with the measured figure and met / not met (or not measured in this run)."""
    fb, fn = medians(list(base.values())), medians(list(new.values()))
    rows = []
    for what, key, kind, bound in TARGETS:
        if key not in fn or (kind != "max" and key not in fb):
            rows.append([what, "not measured in this run", "-"])
            continue
        value = fn[key][1]
        if kind == "max":
            figure, met = f"{fmt(value)} {new[key].unit}", value <= bound
        else:
            ratio = value / fb[key][1] if fb[key][1] else float("nan")
            figure = f"{ratio:.2f}x ({fmt(fb[key][1])} -> {fmt(value)} {new[key].unit})"
            met = ratio <= bound if kind == "ratio_max" else ratio >= bound
        rows.append([what, figure, "met" if met else "**not met**"])
    return table(["target (issue 16)", "measured (new median)", "status"], rows)


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _describe(tree: Path) -> str:
    try:
        rev = _git("rev-parse", "--short", "HEAD", cwd=tree)
        subject = _git("log", "-1", "--format=%s", cwd=tree)
        # RESULTS.md is this run's output, not part of what is measured.
        changed = _git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md", cwd=tree
        )
        dirty = " (with uncommitted changes)" if changed else ""
    except (OSError, subprocess.CalledProcessError):
        return f"{tree} (not a git checkout)"
    if len(subject) > 72:
        subject = subject[:72].rsplit(" ", 1)[0] + " ..."
    return f"{rev} {subject}{dirty}"


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def _machine() -> list[str]:
    mem = cpu = "unknown"
    try:
        with open("/proc/meminfo") as fh:
            mem = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("MemTotal"))
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
    ]


def _uv() -> str:
    local = ROOT / ".tools" / BIN / ("uv.exe" if os.name == "nt" else "uv")
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise SystemExit("uv not found: run `python3 dev.py sync` first")
    return found


def prepare_baseline(ref: str, trees_dir: Path) -> Path:
    """A worktree of ``ref`` with a synced ``.venv``, created on first use and reused after."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = trees_dir / sha[:12]
    if not (tree / ".git").exists():
        trees_dir.mkdir(parents=True, exist_ok=True)
        print(f"+ git worktree add --detach {tree} {sha[:12]}", flush=True)
        _git("worktree", "add", "--detach", "--force", str(tree), sha)
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(tree / ".venv"))
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    base_python = getattr(sys, "_base_executable", sys.executable)
    # --frozen: exactly what that commit's uv.lock says, without re-resolving (and, with uv's
    # shared cache, usually without the network).
    cmd = [_uv(), "sync", "--all-packages", "--all-extras", "--frozen", "--quiet", "--python", base_python]
    print("+ (in the baseline) " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    return tree


def remove_baseline(tree: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def _python(tree: Path) -> Path:
    exe = tree / ".venv" / BIN / ("python.exe" if os.name == "nt" else "python")
    if not exe.exists():
        raise SystemExit(f"{exe} does not exist: run `python3 dev.py sync` in {tree}")
    return exe


def run_one(script: Path, tree: Path, quick: bool) -> tuple[dict[str, object] | None, str]:
    """Run one benchmark script with ``tree``'s interpreter; (its JSON record or None, output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure imports as users get them: from bytecode
    env[ENV_QUICK] = "1" if quick else "0"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out_json = Path(tmp) / "result.json"
        env[ENV_JSON] = str(out_json)
        proc = subprocess.run(
            [str(_python(tree)), str(script)], cwd=tree, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not out_json.exists():
            return None, f"exit {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
        record: dict[str, object] = json.loads(out_json.read_text())
    measured = Path(str(record["cursorpipe_file"])).resolve()
    if not measured.is_relative_to(tree.resolve()):
        # The interpreter imported cursorpipe from somewhere else: the figures would be a lie.
        return None, f"{tree}'s interpreter imported cursorpipe from {measured}"
    return record, proc.stdout


def warm(tree: Path) -> None:
    """Import everything the benchmarks touch once, so a fresh checkout's first round does not pay
    for writing bytecode caches (users run from cached bytecode too)."""
    modules = [
        "cursorpipe.server",
        "cursorpipe.testing.emulator",
        "cursorpipe.testing.fake_agent",
        "cursorpipe.transports.connect",
        "cursorpipe.transports.acp",
        "langchain_cursorpipe",
        "llama_index.llms.cursorpipe",
    ]
    code = "import importlib, contextlib\n" + "".join(
        f"with contextlib.suppress(ImportError): importlib.import_module({m!r})\n" for m in modules
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([str(_python(tree)), "-c", code], cwd=tree, env=env, check=False, capture_output=True)


def _merge(records: list[dict[str, object]]) -> tuple[list[Metric], float]:
    metrics: dict[str, Metric] = {}
    seconds = 0.0
    for record in records:
        seconds += float(record["seconds"])  # type: ignore[arg-type]
        for m in record["metrics"]:  # type: ignore[attr-defined]
            diff = tuple(m["diff"]) if m["diff"] else None
            metric = metrics.setdefault(m["key"], Metric(m["key"], m["unit"], m["better"], diff=diff))  # type: ignore[arg-type]
            metric.samples.extend(m["samples"])
    return list(metrics.values()), seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="run only benchmarks whose name contains one of these")
    parser.add_argument(
        "--baseline",
        nargs="?",
        const=DEFAULT_BASELINE,
        metavar="REF",
        help=f"also measure git ref REF (default {DEFAULT_BASELINE}) and print new / baseline ratios",
    )
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument(
        "--rounds", type=int, help="runs of each benchmark per checkout (default 3 with --baseline, else 1)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: minimal samples")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument(
        "--trees-dir",
        type=Path,
        default=Path(os.environ.get(ENV_TREES, Path.home() / ".cache" / "cursorpipe-bench")),
    )
    parser.add_argument(
        "--note", default="", help="a sentence for RESULTS.md's header (what this run compares)"
    )
    parser.add_argument("--cleanup", action="store_true", help="remove the baseline worktree afterwards")
    args = parser.parse_args(argv)

    scripts = sorted(
        p for p in HERE.glob("bench_*.py") if not args.names or any(s in p.stem for s in args.names)
    )
    if not scripts:
        print("no benchmark matched", file=sys.stderr)
        return 2
    new_tree = args.tree.resolve()
    base_tree = prepare_baseline(args.baseline, args.trees_dir) if args.baseline else None
    rounds = args.rounds or (3 if base_tree else 1)
    trees = [("baseline", base_tree), ("new", new_tree)] if base_tree else [("new", new_tree)]

    for _, tree in trees:
        assert tree is not None
        warm(tree)
    load_before = _loadavg()
    header = ["# Benchmark results", "", *_machine()]
    if base_tree:
        header += [f"- baseline: {_describe(base_tree)}", f"- new: {_describe(new_tree)}"]
    else:
        header += [f"- commit: {_describe(new_tree)}"]
    out: list[str] = []
    everything: dict[str, dict[str, Metric]] = {"baseline": {}, "new": {}}
    failed = 0
    started = time.perf_counter()
    try:
        for script in scripts:
            name = script.stem.removeprefix("bench_")
            print(f"== {name}: {rounds} round(s) x {len(trees)} checkout(s)", flush=True)
            records: dict[str, list[dict[str, object]]] = {label: [] for label, _ in trees}
            errors: list[str] = []
            for r in range(rounds):
                # Interleaved, alternating which goes first (baseline, new | new, baseline | ...):
                # a fixed order lets a systematic first/second-run effect pass for a difference.
                for label, tree in trees if r % 2 == 0 else trees[::-1]:
                    assert tree is not None
                    record, output = run_one(script, tree, args.quick)
                    if record is None:
                        errors.append(f"{label}, round {r + 1}: {output}")
                        print(f"   {label} round {r + 1}: FAILED", flush=True)
                    else:
                        records[label].append(record)
                        print(f"   {label} round {r + 1}: {record['seconds']:.1f} s", flush=True)
            merged = {label: _merge(recs) for label, recs in records.items() if recs}
            for label, (metrics, _) in merged.items():
                everything[label].update({m.key: m for m in metrics})
            title = next((str(recs[0]["title"]) for recs in records.values() if recs), name)
            took = " + ".join(f"{label} {merged[label][1]:.1f} s" for label, _ in trees if label in merged)
            out += [f"## {name}", "", f"_`{script.name}`, {rounds} round(s): {took}_", "", title, ""]
            if base_tree and "baseline" in merged and "new" in merged:
                out.append(render_compare(merged["baseline"][0], merged["new"][0]))
            elif merged:
                for label, (metrics, _) in merged.items():
                    out += ([f"{label}:", ""] if base_tree else []) + [render_single(metrics), ""]
            # Notes (e.g. which modules an import loads) come from each checkout's last round.
            for label, recs in records.items():
                notes = [str(n) for n in recs[-1]["notes"]] if recs else []  # type: ignore[attr-defined]
                prefix = f"{label}: " if base_tree else ""
                out += [""] + [f"- {prefix}{n}" for n in notes] if notes else []
            if errors:
                failed += 1
                out += ["", "**failed**:", "", "```", *(e.strip()[-2500:] for e in errors), "```"]
            out.append("")
            print("\n".join(out[out.index(f"## {name}") :]), flush=True)
    finally:
        if base_tree and args.cleanup:
            remove_baseline(base_tree)
    header += [
        f"- load average (1/5/15 min) before: {load_before}; after: {_loadavg()}",
        *([f"- note: {args.note}"] if args.note else []),
        f"- rounds per checkout: {rounds}{' (quick)' if args.quick else ''}; "
        f"total {time.perf_counter() - started:.0f} s",
        "",
        "Ratios are new / baseline of the medians; `better`/`worse` mark a change of 10 % or more in the "
        "good/bad direction (less than that is noise on this machine). CPU figures are per request "
        "(or turn) from `time.process_time` in the measuring process or the CPU clock of the "
        "server/agent process (nanoseconds on Linux, `bench/_util.py` `proc_cpu_s`); wall-clock "
        "figures on a shared 2-core machine are noisy.",
        "",
    ]
    if base_tree and not args.quick:
        summary = targets_table(everything["baseline"], everything["new"])
        print(summary)
        header += ["## Targets", "", summary, ""]
    if not args.no_write:
        (HERE / "RESULTS.md").write_text("\n".join(header + out).rstrip() + "\n")
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
