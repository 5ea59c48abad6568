"""Load: 200 concurrent streaming requests through cursorpipe-server over a real socket, the
connect transport behind it talking to the Cursor API emulator, once with the limit raised to 200
and once at the default limit (where the overflow must be clean 429s). Every answer is checked against
its own prompt (no cross-talk); afterwards no tasks, sockets, file descriptors or child processes
are left and memory is back near where it started."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, Fault, expected_reply
from fastapi import FastAPI

from ._probes import children, open_fds, rss_mib

N = 200


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", backlog=N * 2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def one(http: httpx.AsyncClient, i: int) -> tuple[str, str]:
    prompt = f"load prompt number {i}"
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    parts: list[str] = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
    return prompt, "".join(parts)


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[str, int]]:
    """The emulator in its own process, so this process's descriptors are only cursorpipe's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cursorpipe.testing.emulator", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
async def test_200_concurrent_streams_no_crosstalk_no_leaks() -> None:
    with emulator_process() as (url, emu_pid):
        config = CursorPipeConfig(
            strategy="connect",
            backend_url=url,
            api_key=Emulator().api_key,
            max_concurrency=N,
            queue_timeout_s=60,
            pool_size=0,
        )
        # Warm the interpreter's own caches first, so the baseline is not the cold start.
        async with CursorClient(config) as warm:
            assert await warm.generate("auto", "warm up") == expected_reply("warm up")
        gc.collect()
        await asyncio.sleep(0.3)
        fds0, rss0 = open_fds(), rss_mib()
        tasks0 = {t for t in asyncio.all_tasks() if not t.done()}

        client = CursorClient(config)
        app = create_app(config, client=client)
        async with serve(app) as base:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=base, timeout=90, limits=limits) as http:
                results = await asyncio.wait_for(asyncio.gather(*(one(http, i) for i in range(N))), 240)
        await client.close()
        assert client.active_requests == 0
        for prompt, answer in results:
            assert answer == expected_reply(prompt)

        del app, client, results
        gc.collect()
        for _ in range(50):  # let closed sockets and finished tasks settle
            await asyncio.sleep(0.1)
            leftover = {t for t in asyncio.all_tasks() if not t.done()} - tasks0 - {asyncio.current_task()}
            if not leftover and open_fds() <= fds0 + 2:
                break
        assert not leftover, leftover
        assert open_fds() <= fds0 + 2, (fds0, open_fds())
        assert children() == [emu_pid]
        # Python keeps freed memory in its arenas; "near its start" means no per-request growth.
        assert rss_mib() - rss0 < 64, (rss0, rss_mib())


@pytest.mark.slow
async def test_load_at_the_default_concurrency_limit_answers_429_cleanly() -> None:
    """The same load at the DEFAULT limits (32 runs, 5 s queue): slow runs make the queue overflow,
    and every request gets either its own correct answer or a well-formed 429 (Retry-After,
    x-should-retry: true); the gate and the client end empty and the next request is served."""
    defaults = CursorPipeConfig()
    with Emulator.start_in_thread() as emu:
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, pool_size=0)
        assert (config.max_concurrency, config.queue_timeout_s) == (
            defaults.max_concurrency,
            defaults.queue_timeout_s,
        )
        emu.inject(Fault.SLOW_FIRST_TOKEN, times=N, seconds=2.0)
        client = CursorClient(config)
        app = create_app(config, client=client)
        async with serve(app) as base:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=base, timeout=90, limits=limits) as http:

                async def attempt(i: int) -> tuple[str, str] | httpx.Response:
                    body = {"model": "auto", "messages": [{"role": "user", "content": f"busy prompt {i}"}]}
                    r = await http.post("/v1/chat/completions", json=body)
                    if r.status_code == 200:
                        return f"busy prompt {i}", r.json()["choices"][0]["message"]["content"]
                    return r

                started = time.monotonic()
                outcomes = await asyncio.wait_for(asyncio.gather(*(attempt(i) for i in range(N))), 120)
                elapsed = time.monotonic() - started
                served = [o for o in outcomes if isinstance(o, tuple)]
                refused = [o for o in outcomes if not isinstance(o, tuple)]
                for prompt, answer in served:
                    assert answer == expected_reply(prompt)
                for r in refused:
                    assert r.status_code == 429, r.text
                    assert r.json()["error"]["code"] == "server_busy"
                    assert r.headers["retry-after"] and r.headers["x-should-retry"] == "true"
                assert len(served) >= defaults.max_concurrency, (len(served), elapsed)
                assert refused, f"no 429 in {elapsed:.1f} s: the queue never overflowed"
                state = app.state.cursorpipe
                assert state.gate.in_use == 0 and client.active_requests == 0
                after = {"model": "auto", "messages": [{"role": "user", "content": "after"}]}
                r = await http.post("/v1/chat/completions", json=after)
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == expected_reply("after")
        await client.close()
