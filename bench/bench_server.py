"""Benchmark cursorpipe-server against calling the client directly.

    python bench/bench_server.py                 # MockTransport with zero delay (server overhead only)
    python bench/bench_server.py --emulator      # connect transport against the Cursor API emulator
                                                 # (in its own process)
    python bench/bench_server.py --requests 400 --repeats 3
    CURSORPIPE_BENCH_PROFILE=/tmp/srv.prof python bench/bench_server.py   # cProfile the server

Prints, at 1, 16 and 64 concurrent requests, streaming and not: requests/s, time to first token
(streaming) or latency (not) through the server and directly through ``CursorClient.events()``,
the time the server adds (difference of medians), CPU per request of the server process (from
its CPU clock, ``_util.proc_cpu_s``), of the load generator (``time.process_time``, printed beside it so a
reader can see the generator is not the limit) and of the direct client, and the server's memory:
RSS when idle and at its peak under load, and ``tracemalloc``'s count of the Python objects held
per open stream with 64 streams open (RSS includes the allocator's high-water mark; tracemalloc
counts only live Python allocations).

The server runs in its own process (as in production) so its RSS and CPU are its own. The load
generator speaks HTTP/1.1 keep-alive over raw asyncio connections with a small hand parser of
the server's responses (``RawHTTP``), one connection per in-flight request. Until issue 16's
second round it was one ``httpx.AsyncClient``: its per-request cost (about 1 ms of CPU at 1
concurrent, 10 ms at 64, growing with the pool's size) made the generator, not the server, the
limit (at 64 concurrent the generator used a whole core at ~100 req/s while the server was ~15 %
busy), and the server's CPU per request was inflated by serving requests one loop wake-up at a
time. That was a measurement error for the baseline and the new code alike; the same script
measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
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
delay = float(os.environ.get("CURSORPIPE_BENCH_DELAY_S", "0"))
client = CursorClient(config, transport=None if emulated else MockTransport(delay_s=delay))
app = create_app(client=client)
traced = os.environ.get("CURSORPIPE_BENCH_TRACEMALLOC")
if traced:  # SIGUSR1 writes the Python memory traced so far to that file (held-streams phase)
    import signal, tracemalloc
    tracemalloc.start()
    def report(*_):
        with open(traced + ".tmp", "w") as fh:
            fh.write(str(tracemalloc.get_traced_memory()[0]))
        os.replace(traced + ".tmp", traced)
    signal.signal(signal.SIGUSR1, report)
profile = os.environ.get("CURSORPIPE_BENCH_PROFILE")
if profile:  # cProfile the whole server process, written when it stops (SIGTERM drains cleanly)
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
try:
    serve(app, config, drain_timeout_s=5)
finally:
    if profile:
        prof.disable()
        prof.dump_stats(profile)
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
def server_process(
    backend: str, key: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = dict(os.environ, **(extra_env or {}))
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


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client for the load generator (see the module docstring for
    why not httpx): one connection per in-flight request, taken from and returned to a stack, and
    a hand parser of the server's responses (``Content-Length`` or chunked bodies)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()

    def request_bytes(self, path: str, body: bytes) -> bytes:
        """One POST request, built once per kind and reused (the server parses it every time)."""
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, data: bytes, marker: bytes | None = None) -> tuple[int, float, bytes]:
        """Send ``data``; (status, seconds to the first body chunk holding ``marker`` or NaN, body)."""
        conn = self._idle.pop() if self._idle else await self._open()
        try:
            status, ttft, body, reusable = await conn.exchange(data, marker)
        except BaseException:
            conn.close()
            self._all.discard(conn)
            raise
        if reusable:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        return status, ttft, body

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        self._all.add(conn)
        return conn

    async def aclose(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)

    async def __aenter__(self) -> RawHTTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Conn(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses the response as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, float, bytes, bool]] | None = None
        self._lost = False
        self._ttft = float("nan")
        #: Done when the current response's marker arrived (or the response ended without it).
        self.first: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost mid-response: {exc}"))

    @property
    def ttft(self) -> float:
        """Seconds to the marker in the current (or last) response, NaN until seen."""
        return self._ttft

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, marker: bytes | None) -> tuple[int, float, bytes, bool]:
        if self._lost or self.transport is None:
            raise ConnectionError("connection closed")
        self._start = time.perf_counter()
        self._marker = marker
        self._ttft = float("nan")
        self._status = 0
        self._head_done = False
        self._chunked = False
        self._length = 0
        self._keep = True
        self._body = bytearray()
        self._scanned = 0
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self.first = loop.create_future()
        self.transport.write(data)
        return await self._waiter

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._head_done and not self._parse_head():
            return
        if self._chunked:
            self._parse_chunks()
        elif len(self._buf) >= self._length:
            self._body += self._buf[: self._length]
            del self._buf[: self._length]
            self._finish()

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        self._status = int(lines[0].split(b" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                self._length = int(value)
            elif name == b"transfer-encoding" and value == b"chunked":
                self._chunked = True
            elif name == b"connection" and value == b"close":
                self._keep = False
        self._head_done = True
        return True

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return
            size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return
            if size == 0:
                del buf[: eol + 4]  # no trailers are sent
                self._finish()
                return
            self._body += buf[eol + 2 : eol + 2 + size]
            del buf[: eol + 2 + size + 2]
            self._seen_chunk()

    def _seen_chunk(self) -> None:
        if self._marker is None or self._ttft == self._ttft:
            return
        start = max(0, self._scanned - len(self._marker))
        if self._body.find(self._marker, start) >= 0:
            self._ttft = time.perf_counter() - self._start
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
        self._scanned = len(self._body)

    def _finish(self) -> None:
        if self.first is not None and not self.first.done():
            self.first.set_result(None)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._ttft, bytes(self._body), self._keep))


#: Streams held open at once for the memory measurement.
HELD_STREAMS = 64
#: Seconds between the mock model's events in that phase: the streams are open and idle
#: between their first token and the next one.
HELD_DELAY_S = 1.5


def traced_bytes(proc: subprocess.Popen[bytes], path: str) -> float:
    """The server's tracemalloc count of live Python memory now (asked for with SIGUSR1)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError), open(path, encoding="ascii") as fh:
            return float(fh.read())
        time.sleep(0.01)
    raise RuntimeError("the server did not report its traced memory")


async def hold(url: str, count: int) -> tuple[list[_Conn], list[asyncio.Task[Any]]]:
    """``count`` streams, each past its first token and still open."""
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    for _ in range(count):
        _, conn = await loop.create_connection(_Conn, *url.removeprefix("http://").split(":"))
        conns.append(conn)
    data = chat_request(RawHTTP(url), True)
    tasks = [asyncio.create_task(c.exchange(data, CONTENT_MARKER)) for c in conns]
    await asyncio.sleep(0)  # each exchange has written its request and armed ``first``
    await asyncio.wait([c.first for c in conns if c.first is not None], timeout=60)
    return conns, tasks


async def release(conns: list[_Conn], tasks: list[asyncio.Task[Any]]) -> int:
    """Disconnect held streams; how many had already ended (they must not have)."""
    ended = sum(t.done() for t in tasks)
    for task in tasks:
        task.cancel()
    for conn in conns:
        conn.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # the server notices the disconnects and cancels the runs
    return ended


async def held_streams(rec: Recorder, count: int) -> None:
    """Memory per open stream, from ``count`` streams held open at once (each past its first
    token): tracemalloc's live Python memory and RSS, each open minus idle, over ``count``. A
    first round warms up every allocation path; the second is measured."""
    path = os.path.join(tempfile.mkdtemp(prefix="cpbench"), "traced")
    env = {"CURSORPIPE_BENCH_DELAY_S": str(HELD_DELAY_S), "CURSORPIPE_BENCH_TRACEMALLOC": path}
    env["CURSORPIPE_BENCH_PROFILE"] = ""  # not this server: tracemalloc alone
    with server_process("", "", env) as (url, proc):
        await release(*await hold(url, count))
        idle_py, idle_rss = traced_bytes(proc, path), rss_mib(proc.pid)
        conns, tasks = await hold(url, count)
        open_py, open_rss = traced_bytes(proc, path), rss_mib(proc.pid)
        ended = await release(conns, tasks)
    if ended or any(c.ttft != c.ttft for c in conns):
        rec.note(f"held streams: {ended} of {count} ended before the measurement (too slow a machine?)")
    per = f"{count} held open"
    rec.add(
        f"server Python memory per open stream, {per} (tracemalloc)",
        (open_py - idle_py) / count / 1024,
        "KiB",
    )
    rec.add(f"server RSS per open stream, {per}", (open_rss - idle_rss) * 1024 / count, "KiB")


CONCURRENCY = (1, 16, 64)


#: The first chunk with answer text in a chat completions stream (the role chunk has none).
CONTENT_MARKER = b'"delta":{"content":"'


def chat_request(http: RawHTTP, stream: bool) -> bytes:
    """The benchmark's chat completions request (built once per phase, sent many times)."""
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    return http.request_bytes("/v1/chat/completions", json.dumps(body).encode())


async def one_server_request(http: RawHTTP, data: bytes, stream: bool) -> tuple[float, float]:
    """(time to first token or NaN, latency) of one request; errors are recorded in ERRORS."""
    start = time.perf_counter()
    status, ttft, body = await http.send(data, CONTENT_MARKER if stream else None)
    took = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    if (b'data: {"error"' if stream else b'{"error"') in body:
        ERRORS.append(body[:200].decode("utf-8", "replace"))
    return (ttft if stream else took), took


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
            # A fresh set of connections per measured phase: a keep-alive connection left idle
            # between phases (longer than uvicorn's keep-alive timeout on a loaded machine) would
            # be closed by the server just as the client reuses it.
            async with RawHTTP(url) as http:
                await load(lambda h: one_server_request(h, chat_request(h, True), True), http, 8, 32)
                await load(lambda h: one_server_request(h, chat_request(h, False), False), http, 8, 32)
            idle = rss_mib(proc.pid)
            rec.add("server RSS idle", idle, "MiB")
            peak = idle
            for concurrency in CONCURRENCY:
                total = max(args.requests, concurrency * 4)
                for _ in range(args.repeats):
                    for mode, stream in (("streaming", True), ("non-streaming", False)):
                        stop = asyncio.Event()

                        async def sample(stop: asyncio.Event = stop) -> None:
                            nonlocal peak
                            while not stop.is_set():
                                peak = max(peak, rss_mib(proc.pid))
                                await asyncio.sleep(0.05)

                        async with RawHTTP(url) as http:
                            data = chat_request(http, stream)
                            fn = lambda h, d=data, s=stream: one_server_request(h, d, s)  # noqa: E731
                            await load(fn, http, concurrency, concurrency)  # open the connections
                            sampler = asyncio.create_task(sample())
                            cpu0, gen0 = proc_cpu_s(proc.pid), time.process_time()
                            rps, ttfts, lat = await load(fn, http, concurrency, total)
                            cpu, gen = proc_cpu_s(proc.pid) - cpu0, time.process_time() - gen0
                        stop.set()
                        await sampler
                        key_ = f"server {mode}, {concurrency} concurrent"
                        rec.add(f"{key_}: requests/s", rps, "req/s", better="higher")
                        if mode == "streaming":
                            rec.add(f"{key_}: time to first token", [t * 1000 for t in ttfts], "ms")
                        rec.add(f"{key_}: latency", [t * 1000 for t in lat], "ms")
                        rec.add(f"{key_}: server CPU per request", cpu * 1000 / total, "ms")
                        rec.add(f"{key_}: load generator CPU per request", gen * 1000 / total, "ms")
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
        if not backend:
            await held_streams(rec, HELD_STREAMS)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emulator", action="store_true", help="connect transport against the emulator")
    # Enough requests that a CPU figure per request is steady (and, where only /proc's 10 ms ticks
    # are available (_util.proc_cpu_s), a tick is 0.017 ms per request).
    default_requests = 8 if quick() else 600
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
