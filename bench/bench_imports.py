"""Import cost: ``python -X importtime`` cumulative time of what a program imports to use cursorpipe.

Each sample is a fresh interpreter. The figure is the sum of the top-level ``cumulative`` entries
that ``-X importtime`` prints for the statement (the interpreter's own start-up is excluded), with
the statement's CPU time (``time.process_time``) beside it. For the framework adapters the
framework is imported first (every ``langchain_core`` / ``llama_index.core`` module the adapter
ends up loading, found by a probe), so the figure is what the adapter adds over the framework's
own import.

    .venv/bin/python bench/bench_imports.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _util import Recorder, quick

REPEATS = 1 if quick() else 2
MARK = "@@bench-imports@@"

#: label -> (framework prefix to pre-import, or "", the statement measured)
CASES: dict[str, tuple[str, str]] = {
    "import cursorpipe": ("", "import cursorpipe"),
    "from cursorpipe import CursorClient, CursorPipeConfig": (
        "",
        "from cursorpipe import CursorClient, CursorPipeConfig",
    ),
    "client and config plus the connect transport's modules": (
        "",
        "from cursorpipe import CursorClient, CursorPipeConfig\nimport cursorpipe.transports.connect",
    ),
    "from cursorpipe.server import create_app": ("", "from cursorpipe.server import create_app"),
    "import langchain_cursorpipe, over langchain_core": ("langchain_core", "import langchain_cursorpipe"),
    "import llama_index.llms.cursorpipe, over llama_index.core": (
        "llama_index.core",
        "import llama_index.llms.cursorpipe",
    ),
}
#: Modules whose presence after ``from cursorpipe import CursorClient`` is worth a note.
WATCH = ("httpx", "h2", "google.protobuf", "pydantic", "pydantic_settings", "fastapi", "uvicorn")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # warm runs must read cached bytecode, as users do
    return env


def _framework_modules(prefix: str, statement: str) -> list[str]:
    """The ``prefix`` modules that ``statement`` loads (imported first, as "the framework"). Also
    the warm-up: the first import in a fresh checkout writes the bytecode caches."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env(), timeout=120
    )
    names: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    if not prefix:
        return []
    return [n for n in names if n == prefix or n.startswith(prefix + ".")]


def _sample(pre: list[str], statement: str) -> tuple[float, float, list[tuple[float, str]], list[str]]:
    """(importtime cumulative ms, CPU ms, top-level (ms, module) entries, modules loaded)."""
    lines = [f"import {m}" for m in pre]
    lines += [
        "import sys, time",
        f"sys.stderr.write({MARK!r} + '\\n'); sys.stderr.flush()",
        "_cpu = time.process_time()",
        statement,
        "_cpu = time.process_time() - _cpu",
        # Printed without importing anything, so nothing after the mark is the probe's own.
        "print(_cpu)",
        "print(' '.join(sorted(sys.modules)))",
    ]
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
        timeout=120,
    )
    *_, cpu_line, modules_line = out.stdout.strip().splitlines()
    cpu, modules = float(cpu_line), modules_line.split()
    seen, total, top = False, 0.0, []
    for line in out.stderr.splitlines():
        if line == MARK:
            seen = True
            continue
        if not seen or not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  "):  # a top-level import of the statement
            total += int(cumulative) / 1000
            top.append((int(cumulative) / 1000, name.strip()))
    if not seen:
        raise RuntimeError("the importtime marker was not seen: " + out.stderr[-500:])
    return total, cpu * 1000, sorted(top, reverse=True), modules


def main() -> None:
    rec = Recorder("imports", "Import cost in a fresh interpreter (`-X importtime`, cumulative).")
    for label, (prefix, statement) in CASES.items():
        pre = _framework_modules(prefix, statement)
        top: list[tuple[float, str]] = []
        modules: list[str] = []
        for _ in range(REPEATS):
            total, cpu, top, modules = _sample(pre, statement)
            rec.add(f"{label}: importtime cumulative", total, "ms")
            rec.add(f"{label}: CPU", cpu, "ms")
        heavy = ", ".join(f"{name} {ms:.0f} ms" for ms, name in top[:4])
        loaded = [w for w in WATCH if w in modules and not (prefix and w == "pydantic")]
        rec.note(
            f"`{label}`: largest top-level imports {heavy or '-'}; of {', '.join(WATCH)} it loads "
            f"{', '.join(loaded) or 'none'}."
        )
    rec.finish()


if __name__ == "__main__":
    main()
