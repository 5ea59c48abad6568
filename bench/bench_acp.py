"""acp transport overhead: one persistent fake ``agent acp``, zero simulated latency.

With the fake agent answering instantly, every millisecond measured is cursorpipe's own cost
(JSON-RPC encoding, routing by sessionId, session creation and mode switch, event plumbing) plus
the fake's. Two pool settings: sessions pre-created by ``warmup`` (what a server does) and none
(every request pays ``session/new`` + ``set_config_option`` on demand).

    .venv/bin/python bench/bench_acp.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from _util import ms, rss_mib, stats, table
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_LATENCY, ENV_STATE_DIR, expected_reply
from cursorpipe.transports.acp import AcpTransport

CONCURRENCY = (1, 8, 32)
ROUNDS = {1: 40, 8: 12, 32: 6}


async def _wait_pool(transport: AcpTransport, size: int) -> None:
    for _ in range(500):
        if transport.pool_ready >= size:
            return
        await asyncio.sleep(0.01)


async def _measure(pool: int) -> list[list[object]]:
    rows: list[list[object]] = []
    config = CursorPipeConfig(strategy="acp", agent_bin=executable(), max_retries=0)
    async with CursorClient(config) as client:
        await client.warmup(pool)
        transport = await client.transport()
        assert isinstance(transport, AcpTransport)
        await client.generate("auto", "warm-up")  # the first turn pays imports and the handshake
        for conc in CONCURRENCY:
            latencies: list[float] = []
            throughput: list[float] = []
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

                start = time.perf_counter()
                latencies += await asyncio.gather(*(one(p) for p in prompts))
                throughput.append(conc / (time.perf_counter() - start))
            lo, med, hi = stats(latencies)
            tlo, tmed, thi = stats(throughput)
            rows.append(
                [
                    pool,
                    conc,
                    len(latencies),
                    ms(lo),
                    ms(med),
                    ms(hi),
                    f"{tlo:.0f} / {tmed:.0f} / {thi:.0f}",
                ]
            )
        agent_rss = rss_mib(transport.pid) if transport.pid else float("nan")
        rows.append([pool, "-", "-", "-", "-", "-", f"agent RSS {agent_rss:.0f} MiB"])
    return rows


async def main() -> None:
    os.environ[ENV_LATENCY] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-acp-") as state:
        os.environ[ENV_STATE_DIR] = state  # the fake's session store, not ~/.cursor
        rows = await _measure(pool=32)
        rows += await _measure(pool=0)
    print("acp transport against the fake `agent acp` (zero simulated latency), per request:")
    print()
    print(
        table(
            [
                "pool",
                "concurrent",
                "requests",
                "min ms",
                "median ms",
                "max ms",
                "throughput req/s (min / median / max)",
            ],
            rows,
        )
    )
    print()
    print(
        "Latency is end to end through CursorClient.generate (session from the pool or created on "
        "demand, mode switch, prompt, streamed chunks, answer). One agent process serves all requests."
    )


if __name__ == "__main__":
    asyncio.run(main())
