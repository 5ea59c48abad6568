"""Cold start: process start to first token, with and without ``warmup()``.

A fresh Python process imports cursorpipe, builds a client and asks for one streamed answer. With
warmup it first calls ``client.warmup()`` (token, connection, model list; for acp the process and a
session pool) and we report both how long start-up took and how fast the first request then was.
Backends: the connect transport against the emulator (in its own process) and acp against the
fake agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from _util import ms, stats, table

REPEATS = 5

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
        async for _chunk in client.stream("auto", "cold start"):
            first = time.perf_counter() - start
            break
        print(json.dumps({"ready": ready - T0, "first_after_ready": first, "first": time.time() - T0}))
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


def run(cfg: dict[str, object], warmup: bool, env: dict[str, str]) -> dict[str, float]:
    child_env = dict(env, BENCH_CFG=json.dumps(cfg), BENCH_WARMUP="1" if warmup else "0")
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, repr(t0)],
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

    rows = []
    with emulator() as url, tempfile.TemporaryDirectory() as state:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CURSORPIPE_", "CURSOR_", "FAKE_AGENT_"))
        }
        env["FAKE_AGENT_STATE_DIR"] = state
        backends = {
            "connect (emulator)": {"strategy": "connect", "backend_url": url, "api_key": Emulator().api_key},
            "acp (fake agent)": {"strategy": "acp", "agent_bin": executable()},
        }
        for name, cfg in backends.items():
            for warm in (False, True):
                samples = [run(cfg, warm, env) for _ in range(REPEATS)]
                first = stats([s["first"] for s in samples])
                after = stats([s["first_after_ready"] for s in samples])
                ready = stats([s["ready"] for s in samples])
                rows.append(
                    [
                        name,
                        "warmup" if warm else "cold",
                        " / ".join(ms(v) for v in ready),
                        " / ".join(ms(v) for v in after),
                        " / ".join(ms(v) for v in first),
                    ]
                )
    print(f"Fresh process per sample, {REPEATS} samples; times in ms, min / median / max.\n")
    print(
        table(
            [
                "backend",
                "mode",
                "process start -> ready",
                "first token after ready",
                "process start -> first token",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
