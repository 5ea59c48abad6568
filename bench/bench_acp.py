"""acp transport overhead: one persistent fake ``agent acp``, zero simulated latency.

With the fake agent answering instantly, every millisecond measured is cursorpipe's own cost
(JSON-RPC encoding, routing by sessionId, session creation and mode switch, event plumbing) plus
the fake's. Two pool settings: sessions pre-created by ``warmup`` (what a server does) and none
(every request pays session creation on demand). CPU per request is this process's
``time.process_time`` (the client) and the agent's process CPU clock (``_util.proc_cpu_s``) over each round.

Pool 32's client CPU runs from a batch's start until the pool is full again (issue 16, session
4): the sessions a batch takes are replaced by a background refill, and a window that closed with
the batch counted whatever part of that refill happened to finish inside it, so a faster refill
(done before the batch ends) was charged more than a slow one (left for after it). Throughput and
latency still cover the batch alone. The floor's pooled rows count their session creation the
same way. The batch-only reading is still printed (``batch window only``) beside it.

``floor`` is a minimal ACP client doing the same exchange per request on its own fake agent:
``session/new``, the mode switch cursorpipe makes (``session/set_config_option`` to ask), then
``session/prompt`` with the streamed chunks joined; one reader, futures by request id, chunks by
session id, the same JSON parser cursorpipe picks (orjson when installed), and no error handling,
retries, timeouts, events or pool. It shows how much of a request's client CPU is the exchange
itself (pipes, JSON, the event loop) and how much is cursorpipe's; it runs the same in both
checkouts of a ``--baseline`` run.

    .venv/bin/python bench/bench_acp.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _util import Recorder, proc_cpu_s, quick, rss_mib
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_LATENCY, ENV_STATE_DIR, expected_reply

CONCURRENCY = (1, 8, 32)
ROUNDS = {1: 2, 8: 1, 32: 1} if quick() else {1: 60, 8: 10, 32: 4}


async def _wait_pool(transport: object, size: int) -> None:
    for _ in range(500):
        if getattr(transport, "pool_ready", size) >= size:
            return
        await asyncio.sleep(0.01)


async def _measure(rec: Recorder, pool: int) -> None:
    config = CursorPipeConfig(strategy="acp", agent_bin=executable(), max_retries=0)
    async with CursorClient(config) as client:
        await client.warmup(pool)
        transport = await client.transport()
        pid = getattr(transport, "pid", None)
        await client.generate("auto", "warm-up")  # the first turn pays imports and the handshake
        for conc in CONCURRENCY:
            label = f"pool {pool}, {conc} concurrent"
            agent0 = proc_cpu_s(pid) if pid else 0.0
            for r in range(ROUNDS[conc]):
                if pool:
                    await _wait_pool(transport, min(pool, conc))
                prompts = [f"bench {conc} {r} {i}" for i in range(conc)]

                async def one(prompt: str) -> float:
                    start = time.perf_counter()
                    text = await client.generate("auto", prompt)
                    took = time.perf_counter() - start
                    assert text == expected_reply(prompt), text
                    return took

                cpu0 = time.process_time()
                start = time.perf_counter()
                latencies = await asyncio.gather(*(one(p) for p in prompts))
                wall = time.perf_counter() - start
                batch_cpu = time.process_time() - cpu0
                if pool:  # the CPU of replacing the sessions this batch took belongs to it
                    await _wait_pool(transport, pool)
                cpu = time.process_time() - cpu0
                rec.add(f"{label}: latency", [t * 1000 for t in latencies], "ms")
                rec.add(f"{label}: throughput", conc / wall, "req/s", better="higher")
                rec.add(f"{label}: client CPU per request", cpu * 1000 / conc, "ms")
                if pool:  # the earlier reading, printed beside it: the batch's own window only
                    rec.add(
                        f"{label}: client CPU per request, batch window only", batch_cpu * 1000 / conc, "ms"
                    )
            if pid:  # over the whole level (where only /proc's 10 ms ticks are available, they need it)
                requests = conc * ROUNDS[conc]
                rec.add(f"{label}: agent CPU per request", (proc_cpu_s(pid) - agent0) * 1000 / requests, "ms")
        if pid:
            rec.add(f"pool {pool}: agent RSS after the run", rss_mib(pid), "MiB")


_loads: Callable[[bytes], Any] = json.loads
with contextlib.suppress(ImportError):  # the parser cursorpipe's JSON-RPC codec uses when installed
    from orjson import loads as _loads


class FloorClient:
    """The minimal ACP client of the module docstring (the floor's measured exchange)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.chunks: dict[str, list[str]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            msg = _loads(line)
            if "id" in msg and "method" not in msg:
                self.pending.pop(msg["id"]).set_result(msg.get("result"))
            elif msg.get("method") == "session/update":
                params = msg["params"]
                update = params["update"]
                if update.get("sessionUpdate") == "agent_message_chunk":
                    self.chunks[params["sessionId"]].append(update["content"]["text"])

    def call(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        self.next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        assert self.proc.stdin is not None
        line = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        self.proc.stdin.write(line.encode() + b"\n")
        return fut

    async def session(self) -> str:
        result = await self.call("session/new", {"cwd": os.getcwd(), "mcpServers": []})
        sid: str = result["sessionId"]
        await self.call("session/set_config_option", {"sessionId": sid, "configId": "mode", "value": "ask"})
        return sid

    async def generate(self, prompt: str, sid: str | None = None) -> str:
        sid = sid or await self.session()
        self.chunks[sid] = []
        await self.call("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": prompt}]})
        return "".join(self.chunks.pop(sid))


async def _measure_floor(rec: Recorder) -> None:
    proc = await asyncio.create_subprocess_exec(
        executable(), "acp", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24
    )
    floor = FloorClient(proc)
    try:
        await floor.call("initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        await floor.generate("warm-up")
        for pooled, conc in [(p, c) for p in (True, False) for c in CONCURRENCY]:
            # pooled: sessions made (and switched) before the measured batch, like ``pool 32``;
            # else each request makes its own, like ``pool 0``.
            label = f"floor {'pooled' if pooled else 'fresh'}, {conc} concurrent"
            agent0 = proc_cpu_s(proc.pid)
            for r in range(ROUNDS[conc]):
                prompts = [f"bench {conc} {r} {i}" for i in range(conc)]
                cpu0 = time.process_time()  # pooled: the sessions' creation counts, as a refill does
                sids = await asyncio.gather(*(floor.session() for _ in prompts)) if pooled else [None] * conc
                start = time.perf_counter()
                pairs = zip(prompts, sids, strict=True)
                texts = await asyncio.gather(*(floor.generate(p, s) for p, s in pairs))
                wall = time.perf_counter() - start
                cpu = time.process_time() - cpu0
                for prompt, text in zip(prompts, texts, strict=True):
                    assert text == expected_reply(prompt), text
                rec.add(f"{label}: throughput", conc / wall, "req/s", better="higher")
                rec.add(f"{label}: client CPU per request", cpu * 1000 / conc, "ms")
            requests = conc * ROUNDS[conc]
            agent_ms = (proc_cpu_s(proc.pid) - agent0) * 1000 / requests
            rec.add(f"{label}: agent CPU per request", agent_ms, "ms")
    finally:
        floor.reader.cancel()
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()


async def main() -> None:
    rec = Recorder("acp", "acp transport against the fake `agent acp` (zero simulated latency), per request.")
    os.environ[ENV_LATENCY] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as state:
        os.environ[ENV_STATE_DIR] = state  # the fake's session store, not ~/.cursor
        await _measure(rec, pool=32)
        await _measure(rec, pool=0)
        await _measure_floor(rec)
    rec.note(
        "Latency is end to end through CursorClient.generate (session from the pool or created on "
        "demand, prompt, streamed chunks, answer); one agent process serves every request. CPU per "
        "request is measured over each concurrent batch, for pool 32 until the pool is refilled (the "
        "agent's, from its process CPU clock, over the whole level)."
    )
    rec.finish()


if __name__ == "__main__":
    asyncio.run(main())
