"""Cold start: process start to first token, with and without ``warmup()``.

A fresh Python process imports cursorpipe, builds a client and asks for one streamed answer. With
warmup it first calls ``client.warmup()`` (token, connection, model list; for acp the process and a
session pool) and we report both how long start-up took and how fast the first request then was.
Backends: the connect transport against the emulator (in its own process) and acp against the
fake agent. The child also reports its CPU time up to the first token (``time.process_time``,
which counts from process start) and its resident memory once the turn has finished.

Two environments for connect: the checkout's dev ``.venv`` (every workspace package and the dev
tools) and, labelled ``user venv``, a venv holding only the ``cursorpipe`` distribution and its
declared dependencies, built offline by uv from the checkout's ``uv.lock`` and uv's cache (with
bytecode compiled, as an installer leaves it) — what ``pip install cursorpipe`` gives a user. The
two differ because of what other packages do at import: ``import httpx`` imports its command-line
module, which pulls in click, rich and pygments when they are installed (the dev venv has them),
and httpx loads zstandard's decoder when that is installed. The RSS target row uses the user venv
(what the target is about: a client process of someone who installed cursorpipe); the cold-start
target row keeps the dev venv, the slower of the two. If the user venv cannot be built (no uv, or
a package missing from uv's cache) its rows are left out and a line says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _util import Recorder, quick

REPEATS = 1 if quick() else 2

CHILD = r"""
import asyncio, json, os, sys, time
T0 = float(sys.argv[1])
async def main():
    import cursorpipe
    from cursorpipe import CursorClient, CursorPipeConfig
    cfg = CursorPipeConfig(**json.loads(os.environ["BENCH_CFG"]))
    async with CursorClient(cfg) as client:
        if os.environ.get("BENCH_WARMUP") == "1":
            await client.warmup(pool_size=1)
        ready = time.time()
        start = time.perf_counter()
        first = first_at = cpu = 0.0
        async for _chunk in client.stream("auto", "cold start"):
            if not first:
                first, first_at, cpu = time.perf_counter() - start, time.time(), time.process_time()
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))
    print(json.dumps({"ready": ready - T0, "first_after_ready": first, "first": first_at - T0,
                      "cpu": cpu, "rss": rss}))
asyncio.run(main())
"""


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cursorpipe.testing.emulator", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def user_venv() -> Iterator[str | None]:
    """The python of a venv holding only ``cursorpipe`` and its dependencies, or ``None``."""
    root = Path.cwd()  # run_all runs each checkout's bench from that checkout's root
    uv = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "uv"
    uv_bin = str(uv) if uv.exists() else shutil.which("uv")
    with tempfile.TemporaryDirectory(prefix="cursorpipe-user-venv-") as folder:
        venv = Path(folder) / "venv"
        env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv), UV_OFFLINE="1")
        base = getattr(sys, "_base_executable", sys.executable)
        cmd = [uv_bin or "uv", "sync", "--package", "cursorpipe", "--no-dev", "--frozen", "--no-editable"]
        # --reinstall-package: uv caches the wheel it built from a local source tree; the checkout's
        # own code must be what is measured.
        cmd += ["--compile-bytecode", "--reinstall-package", "cursorpipe", "--quiet", "--python", base]
        try:
            if uv_bin is None or not (root / "uv.lock").exists():
                raise FileNotFoundError("uv or uv.lock not found")
            subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"note: no user venv for the cold start ({type(exc).__name__}: {exc})", file=sys.stderr)
            yield None
            return
        yield str(venv / "bin" / "python")


def run(
    cfg: dict[str, object], warmup: bool, env: dict[str, str], python: str = sys.executable
) -> dict[str, float]:
    child_env = dict(env, BENCH_CFG=json.dumps(cfg), BENCH_WARMUP="1" if warmup else "0")
    t0 = time.time()
    out = subprocess.run(
        [python, "-c", CHILD, repr(t0)],
        env=child_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    from cursorpipe.testing.emulator import Emulator
    from cursorpipe.testing.fake_agent import executable

    rec = Recorder("cold_start", f"Fresh process per sample, {REPEATS} samples per backend and mode.")
    with emulator() as url, tempfile.TemporaryDirectory() as state, user_venv() as user_python:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CURSORPIPE_", "CURSOR_", "FAKE_AGENT_"))
        }
        env["FAKE_AGENT_STATE_DIR"] = state
        backends = {
            "connect (emulator)": {"strategy": "connect", "backend_url": url, "api_key": Emulator().api_key},
            "acp (fake agent)": {"strategy": "acp", "agent_bin": executable()},
        }
        run(backends["connect (emulator)"], False, env)  # warm-up: bytecode caches, emulator paths
        if user_python is not None:
            run(backends["connect (emulator)"], False, env, user_python)
        # Samples interleaved across backends and modes, so drift in the machine's load hits all.
        for _ in range(REPEATS):
            for name, cfg in backends.items():
                for warm in (False, True):
                    _record(rec, f"{name}, {'warmup' if warm else 'cold'}", run(cfg, warm, env))
            if user_python is not None:
                sample = run(backends["connect (emulator)"], False, env, user_python)
                _record(rec, "connect (emulator, user venv), cold", sample)
    rec.finish()


def _record(rec: Recorder, label: str, sample: dict[str, float]) -> None:
    rec.add(f"{label}: process start to ready", sample["ready"] * 1000, "ms")
    rec.add(f"{label}: first token after ready", sample["first_after_ready"] * 1000, "ms")
    rec.add(f"{label}: process start to first token", sample["first"] * 1000, "ms")
    rec.add(f"{label}: CPU to first token", sample["cpu"] * 1000, "ms")
    rec.add(f"{label}: RSS after the turn", sample["rss"], "MiB")


if __name__ == "__main__":
    main()
