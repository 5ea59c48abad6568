"""Benchmark cursorpipe-server against calling the client directly.

    python bench/bench_server.py                 # MockTransport with zero delay (server overhead only)
    python bench/bench_server.py --emulator      # connect transport against the Cursor API emulator
                                                 # (in its own process)
    python bench/bench_server.py --requests 400 --repeats 3

Prints, at 1, 16 and 64 concurrent requests, streaming and not: requests/s, time to first token
(streaming) or latency (not) through the server and directly through ``CursorClient.events()``,
the time the server adds (difference of medians), CPU per request of the server process (from
``/proc/<pid>/stat``) and of the direct client (``time.process_time``), and the server's RSS when
idle and under load. The server runs in its own process (as in production) so its RSS and CPU are
its own; the load generator is httpx, one connection per in-flight request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
from _util import Recorder, proc_cpu_s, quick

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


CONCURRENCY = (1, 16, 64)


async def one_server_request(http: httpx.AsyncClient, stream: bool) -> tuple[float, float]:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    start = time.perf_counter()
    if not stream:
        r = await http.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        if "error" in r.json():
            ERRORS.append(r.text[:200])
        took = time.perf_counter() - start
        return took, took
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


async def run(rec: Recorder, args: argparse.Namespace) -> None:
    from cursorpipe import CursorClient, CursorPipeConfig, MockTransport

    emu_cm: Any = emulator_process() if args.emulator else contextlib.nullcontext(("", ""))
    with emu_cm as (backend, key):

        def direct_client() -> CursorClient:
            if backend:
                return CursorClient(CursorPipeConfig(strategy="connect", backend_url=backend, api_key=key))
            return CursorClient(transport=MockTransport())

        with server_process(backend, key) as (url, proc):
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)

            def http_client() -> httpx.AsyncClient:
                # A fresh pool per measured phase: a keep-alive connection left idle between phases
                # (longer than uvicorn's keep-alive timeout on a loaded machine) would be closed by
                # the server just as the client reuses it, failing the request with a ReadError.
                return httpx.AsyncClient(base_url=url, timeout=120, limits=limits)

            stream_req = lambda h: one_server_request(h, True)  # noqa: E731
            plain_req = lambda h: one_server_request(h, False)  # noqa: E731
            async with http_client() as http:
                await load(stream_req, http, 8, 32)  # warm up both paths
                await load(plain_req, http, 8, 32)
            idle = rss_mib(proc.pid)
            rec.add("server RSS idle", idle, "MiB")
            peak = idle
            for concurrency in CONCURRENCY:
                total = max(args.requests, concurrency * 4)
                for _ in range(args.repeats):
                    for mode, fn in (("streaming", stream_req), ("non-streaming", plain_req)):
                        stop = asyncio.Event()

                        async def sample(stop: asyncio.Event = stop) -> None:
                            nonlocal peak
                            while not stop.is_set():
                                peak = max(peak, rss_mib(proc.pid))
                                await asyncio.sleep(0.05)

                        async with http_client() as http:
                            await load(fn, http, concurrency, concurrency)  # open the connections
                            sampler = asyncio.create_task(sample())
                            cpu0 = proc_cpu_s(proc.pid)
                            rps, ttfts, lat = await load(fn, http, concurrency, total)
                            cpu = proc_cpu_s(proc.pid) - cpu0
                        stop.set()
                        await sampler
                        key_ = f"server {mode}, {concurrency} concurrent"
                        rec.add(f"{key_}: requests/s", rps, "req/s", better="higher")
                        if mode == "streaming":
                            rec.add(f"{key_}: time to first token", [t * 1000 for t in ttfts], "ms")
                        rec.add(f"{key_}: latency", [t * 1000 for t in lat], "ms")
                        rec.add(f"{key_}: server CPU per request", cpu * 1000 / total, "ms")
                    async with direct_client() as client:
                        await load(one_direct_request, client, 4, 8)
                        cpu0 = time.process_time()
                        rps, ttfts, lat = await load(one_direct_request, client, concurrency, total)
                        cpu = time.process_time() - cpu0
                    key_ = f"direct, {concurrency} concurrent"
                    rec.add(f"{key_}: requests/s", rps, "req/s", better="higher")
                    rec.add(f"{key_}: time to first token", [t * 1000 for t in ttfts], "ms")
                    rec.add(f"{key_}: latency", [t * 1000 for t in lat], "ms")
                    rec.add(f"{key_}: client CPU per request", cpu * 1000 / total, "ms")
                rec.add_diff(
                    f"added by the server, streaming, {concurrency} concurrent: time to first token",
                    f"server streaming, {concurrency} concurrent: time to first token",
                    f"direct, {concurrency} concurrent: time to first token",
                    "ms",
                )
                rec.add_diff(
                    f"added by the server, non-streaming, {concurrency} concurrent: latency",
                    f"server non-streaming, {concurrency} concurrent: latency",
                    f"direct, {concurrency} concurrent: latency",
                    "ms",
                )
            rec.add("server RSS loaded (peak during the runs)", peak, "MiB")
            rec.add("server memory per open stream at 64", max(0.0, peak - idle) * 1024 / 64, "KiB")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emulator", action="store_true", help="connect transport against the emulator")
    default_requests = 8 if quick() else 100
    parser.add_argument(
        "--requests", type=int, default=default_requests, help="requests per repeat (min 4x concurrency)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="repeats per concurrency level")
    args = parser.parse_args()
    backend = "emulator (connect transport)" if args.emulator else "MockTransport, zero delay"
    rec = Recorder("server", f"cursorpipe-server vs the client directly ({backend}), chat completions.")
    asyncio.run(run(rec, args))
    if ERRORS:
        rec.note(f"**{len(ERRORS)} requests ended with an error**, e.g. {ERRORS[0]}")
    rec.finish()
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
