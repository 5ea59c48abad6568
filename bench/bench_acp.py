"""acp transport overhead: one persistent fake ``agent acp``, zero simulated latency.

With the fake agent answering instantly, every millisecond measured is cursorpipe's own cost
(JSON-RPC encoding, routing by sessionId, session creation and mode switch, event plumbing) plus
the fake's. Two pool settings: sessions pre-created by ``warmup`` (what a server does) and none
(every request pays session creation on demand). CPU per request is this process's
``time.process_time`` (the client) and the agent's ``/proc/<pid>/stat`` over each round.

    .venv/bin/python bench/bench_acp.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

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
                cpu = time.process_time() - cpu0
                rec.add(f"{label}: latency", [t * 1000 for t in latencies], "ms")
                rec.add(f"{label}: throughput", conc / wall, "req/s", better="higher")
                rec.add(f"{label}: client CPU per request", cpu * 1000 / conc, "ms")
            if pid:  # over the whole level: the agent's CPU is only known to a clock tick (10 ms)
                requests = conc * ROUNDS[conc]
                rec.add(f"{label}: agent CPU per request", (proc_cpu_s(pid) - agent0) * 1000 / requests, "ms")
        if pid:
            rec.add(f"pool {pool}: agent RSS after the run", rss_mib(pid), "MiB")


async def main() -> None:
    rec = Recorder("acp", "acp transport against the fake `agent acp` (zero simulated latency), per request.")
    os.environ[ENV_LATENCY] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as state:
        os.environ[ENV_STATE_DIR] = state  # the fake's session store, not ~/.cursor
        await _measure(rec, pool=32)
        await _measure(rec, pool=0)
    rec.note(
        "Latency is end to end through CursorClient.generate (session from the pool or created on "
        "demand, prompt, streamed chunks, answer); one agent process serves every request. CPU per "
        "request is measured over each concurrent batch (the agent's over the whole level, as /proc "
        "counts clock ticks)."
    )
    rec.finish()


if __name__ == "__main__":
    asyncio.run(main())
