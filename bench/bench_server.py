"""Benchmark cursorpipe-server against calling the client directly.

    python bench/bench_server.py                 # MockTransport with zero delay (server overhead only)
    python bench/bench_server.py --emulator      # connect transport against the Cursor API emulator
                                                 # (in its own process)
    python bench/bench_server.py --requests 400 --repeats 5

Prints, at 1 and 64 concurrent streaming requests: requests/s (min/median/max over repeats),
time to first token through the server and directly through ``CursorClient.events()``, the time
the server adds (min/median/max), and the server's RSS when idle and under load. The server runs
in its own process (as in production) so its RSS is its own; the load generator is httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

PROMPT = "Benchmark prompt: say something short."
#: Mid-stream error events seen (a benchmark that fails requests must say so, not look fast).
ERRORS: list[str] = []
# The backend and key reach the server through its environment, never argv (common rules).
SERVER_SCRIPT = """
import os, sys
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from cursorpipe.server.cli import serve
emulated = bool(os.environ.get("CURSOR_BACKEND_URL"))
config = CursorPipeConfig(
    port=int(sys.argv[1]), log_level="warning", max_concurrency=256, queue_timeout_s=60, pool_size=0,
    strategy="connect" if emulated else "auto",
)
client = CursorClient(config, transport=None if emulated else MockTransport())
serve(create_app(client=client), config, drain_timeout_s=5)
"""


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[str, str]]:
    """The emulator in its own process, so it does not share a GIL with the load generator."""
    from cursorpipe.testing.emulator import DEFAULT_API_KEY

    port = free_port()
    cmd = [sys.executable, "-m", "cursorpipe.testing.emulator", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(url + "/", timeout=1)
                break
            time.sleep(0.1)
        yield url, DEFAULT_API_KEY
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def server_process(backend: str, key: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = dict(os.environ)
    if backend:
        env.update(CURSOR_BACKEND_URL=backend, CURSOR_API_KEY=key)
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


async def one_server_request(http: httpx.AsyncClient) -> tuple[float, float]:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    start = time.perf_counter()
    ttft = float("nan")
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith('data: {"error"'):
                ERRORS.append(line[6:200])
            if ttft != ttft and line.startswith("data: {") and '"content":"' in line and '"role"' not in line:
                ttft = time.perf_counter() - start
    return ttft, time.perf_counter() - start


async def one_direct_request(client: Any) -> tuple[float, float]:
    from cursorpipe import TextDelta

    start = time.perf_counter()
    ttft = float("nan")
    async for event in client.events("auto", prompt=PROMPT):
        if ttft != ttft and isinstance(event, TextDelta) and event.text:
            ttft = time.perf_counter() - start
    return ttft, time.perf_counter() - start


async def load(fn: Any, arg: Any, concurrency: int, total: int) -> tuple[float, list[float], list[float]]:
    """Run ``total`` requests with ``concurrency`` in flight; (requests/s, ttfts, latencies)."""
    queue = iter(range(total))
    ttfts: list[float] = []
    lat: list[float] = []

    async def worker() -> None:
        for _ in queue:
            t, total_s = await fn(arg)
            ttfts.append(t)
            lat.append(total_s)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start), ttfts, lat


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cursorpipe import CursorClient, CursorPipeConfig, MockTransport

    results: dict[str, Any] = {}
    emu_cm: Any = emulator_process() if args.emulator else contextlib.nullcontext(("", ""))
    with emu_cm as (backend, key):

        def direct_client() -> CursorClient:
            if backend:
                return CursorClient(CursorPipeConfig(strategy="connect", backend_url=backend, api_key=key))
            return CursorClient(transport=MockTransport())

        with server_process(backend, key) as (url, proc):
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
                await load(one_server_request, http, 8, 32)  # warm up both sides
                idle = rss_mib(proc.pid)
                results["rss_idle_mib"] = idle
                peak = idle
                for concurrency in (1, 64):
                    total = max(args.requests, concurrency * 4)
                    row: dict[str, list[float]] = {
                        k: [] for k in ("srv_rps", "dir_rps", "srv_ttft", "dir_ttft")
                    }
                    for _ in range(args.repeats):
                        sampler_stop = asyncio.Event()

                        async def sample(stop: asyncio.Event = sampler_stop) -> None:
                            nonlocal peak
                            while not stop.is_set():
                                peak = max(peak, rss_mib(proc.pid))
                                await asyncio.sleep(0.05)

                        sampler = asyncio.create_task(sample())
                        rps, ttfts, _ = await load(one_server_request, http, concurrency, total)
                        sampler_stop.set()
                        await sampler
                        row["srv_rps"].append(rps)
                        row["srv_ttft"].extend(ttfts)
                        async with direct_client() as client:
                            await load(one_direct_request, client, 4, 8)
                            rps, ttfts, _ = await load(one_direct_request, client, concurrency, total)
                        row["dir_rps"].append(rps)
                        row["dir_ttft"].extend(ttfts)
                    med_direct = statistics.median(row["dir_ttft"])
                    row["added_ttft"] = [t - med_direct for t in row["srv_ttft"]]
                    results[f"c{concurrency}"] = row
                results["rss_loaded_mib"] = peak
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emulator", action="store_true", help="connect transport against the emulator")
    parser.add_argument("--requests", type=int, default=200, help="requests per repeat (min 4x concurrency)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per concurrency level")
    parser.add_argument("--json", action="store_true", help="also print raw results as JSON")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    backend = "emulator (connect transport)" if args.emulator else "MockTransport, zero delay"
    print(f"## cursorpipe-server vs the client directly ({backend})\n")
    print("Streaming chat completions; min / median / max. Added time = server TTFT - median direct TTFT.\n")
    print("| concurrency | measure | min | median | max |")
    print("|---|---|---|---|---|")
    for c in (1, 64):
        row = results[f"c{c}"]
        for label, key, unit, scale in (
            ("server requests/s", "srv_rps", "", 1.0),
            ("direct requests/s", "dir_rps", "", 1.0),
            ("server time to first token (ms)", "srv_ttft", "", 1000.0),
            ("direct time to first token (ms)", "dir_ttft", "", 1000.0),
            ("added by the server (ms)", "added_ttft", "", 1000.0),
        ):
            v = [x * scale for x in row[key]]
            print(f"| {c} | {label}{unit} | {min(v):.2f} | {statistics.median(v):.2f} | {max(v):.2f} |")
    per_stream_kib = max(0.0, results["rss_loaded_mib"] - results["rss_idle_mib"]) * 1024 / 64
    print(
        f"\nServer RSS: idle {results['rss_idle_mib']:.1f} MiB, loaded {results['rss_loaded_mib']:.1f} MiB "
        f"(peak while the runs were going): about {per_stream_kib:.0f} KiB per open stream at 64.\n"
    )
    if ERRORS:
        print(f"**{len(ERRORS)} streamed requests ended with an error event**, e.g. {ERRORS[0]}\n")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
