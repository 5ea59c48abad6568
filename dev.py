#!/usr/bin/env python3
"""The project's two entry points, bootstrapping everything they need.

    python3 dev.py serve [cursorpipe-server args...]   run the OpenAI-compatible server
    python3 dev.py test  [pytest args...]              lint + type check + tests + notebooks

Needs only Python 3.11+ and pip. On first use it creates ``.tools/`` (a venv holding uv, taken from
PyPI) and then ``.venv/`` from ``uv.lock``: ``serve`` installs only what the server needs (the core
with its ``server`` and ``metrics`` extras, plus ``cursorpipe-testing`` for ``--emulator``); ``test``
and the other verbs install every workspace package and the dev tools.
Other verbs: ``sync`` (bootstrap only), ``lint``, ``typecheck``, ``protos`` (regenerate), and
``bench [names...] [--baseline [REF]] [--quick]`` (benchmarks, optionally side by side with a git
ref built in its own worktree and venv; see ``bench/run_all.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
VENV = ROOT / ".venv"
BIN = "Scripts" if os.name == "nt" else "bin"
EXE = ".exe" if os.name == "nt" else ""
UV_SPEC = "uv>=0.9,<1"


def _run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if check and rc != 0:
        sys.exit(rc)
    return rc


def _uv() -> Path:
    uv = TOOLS / BIN / f"uv{EXE}"
    if not uv.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
        _run(TOOLS / BIN / f"python{EXE}", "-m", "pip", "install", "--quiet", UV_SPEC)
    return uv


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["UV_PROJECT_ENVIRONMENT"] = str(VENV)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def sync() -> None:
    """Create or update .venv from the lock file: all packages, all extras, the dev group."""
    args = ["sync", "--all-packages", "--all-extras", "--python", sys.executable]
    if os.environ.get("CI"):
        args.append("--locked")  # CI must install exactly what uv.lock says (and fail if it is stale)
    _run(_uv(), *args, env=_env())


def sync_server(*, emulator: bool) -> None:
    """Install only what ``cursorpipe-server`` needs: no test tools, notebooks or official SDK.

    ``--inexact`` leaves anything already in .venv alone, so a development environment made by
    ``dev.py test`` keeps working after a ``serve``.
    """
    args = ["sync", "--package", "cursorpipe", "--no-dev", "--inexact", "--python", sys.executable]
    args += ["--extra", "server", "--extra", "metrics"]
    if emulator:  # the emulator ships in its own distribution (with hypercorn)
        args += ["--package", "cursorpipe-testing"]
    if os.environ.get("CI"):
        args.append("--locked")
    _run(_uv(), *args, env=_env())


def _tool(name: str) -> Path:
    return VENV / BIN / f"{name}{EXE}"


def lint() -> None:
    _run(_tool("ruff"), "check", ".")
    _run(_tool("ruff"), "format", "--check", ".")
    # The import rules of issue 13 ([tool.importlinter] in pyproject.toml).
    _run(_tool("lint-imports"), "--no-cache")


def typecheck() -> None:
    _run(_tool("mypy"))


def pytest(args: list[str]) -> int:
    rc = _run(_tool("pytest"), *args, check=False, env=_env())
    if rc == 5:  # pytest: no tests collected. A suite that ran nothing must not look green.
        print("pytest collected no tests: failing on purpose", file=sys.stderr)
        return 1
    return rc


def main(argv: list[str]) -> int:
    verb, rest = (argv[0], argv[1:]) if argv else ("test", [])
    if verb == "sync":
        sync()
        return 0
    if verb == "serve":
        sync_server(emulator="--emulator" in rest)
        os.execve(_tool("cursorpipe-server"), [str(_tool("cursorpipe-server")), *rest], _env())
    if verb == "lint":
        sync()
        lint()
        return 0
    if verb == "typecheck":
        sync()
        typecheck()
        return 0
    if verb == "protos":
        sync()
        return _run(_tool("python"), "scripts/gen_protos.py", *rest, check=False)
    if verb == "bench":
        sync()
        return _run(_tool("python"), "bench/run_all.py", *rest, check=False)
    if verb == "test":
        sync()
        lint()
        typecheck()
        # tests/notebooks re-executes the notebooks and compares them with their stored outputs.
        return pytest(rest or ["tests"])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
