"""CLI transports' overhead: subprocess (one ``agent --print`` per request) and acp (one persistent
``agent acp``), against the fake agent with zero simulated latency, at 1, 8 and 32 concurrent
requests.

Three rows per concurrency level, measured in one run so they compare fairly:

* ``bare print``: the fake ``agent --print --output-format stream-json --stream-partial-output``
  spawned directly with asyncio and read to the end (no cursorpipe): the cost of the fake itself;
* ``subprocess``: ``CursorClient(strategy="subprocess").generate`` — the difference to the bare row
  is cursorpipe's overhead (env, argv, parser, event plumbing, staged process shutdown);
* ``acp``: ``CursorClient(strategy="acp").generate`` with a warm session pool (skipped, with a note,
  if ``cursorpipe.transports.acp.AcpTransport`` is not importable — see :func:`acp_rows`).

Latency figures are min / median / max over every request of every round; throughput is requests
per second of each round (min / median / max).

    .venv/bin/python bench/bench_cli.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable

from _util import ms, stats, table
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_LATENCY, ENV_STATE_DIR, expected_reply

CONCURRENCY = (1, 8, 32)
ROUNDS = {1: 20, 8: 5, 32: 3}
HEADER = [
    "path",
    "concurrent",
    "requests",
    "min ms",
    "median ms",
    "max ms",
    "req/s (min / median / max)",
    "median - bare print ms",
]

One = Callable[[str], Awaitable[None]]


async def _series(
    label: str, one: One, bare_median: dict[int, float] | None
) -> tuple[list[list[object]], dict[int, float]]:
    rows: list[list[object]] = []
    medians: dict[int, float] = {}
    await one(f"{label} warm-up")
    for conc in CONCURRENCY:
        latencies: list[float] = []
        throughput: list[float] = []
        for r in range(ROUNDS[conc]):
            prompts = [f"{label} {conc} {r} {i}" for i in range(conc)]

            async def timed(prompt: str) -> float:
                start = time.perf_counter()
                await one(prompt)
                return time.perf_counter() - start

            start = time.perf_counter()
            latencies += await asyncio.gather(*(timed(p) for p in prompts))
            throughput.append(conc / (time.perf_counter() - start))
        lo, med, hi = stats(latencies)
        tlo, tmed, thi = stats(throughput)
        medians[conc] = med
        extra = f"{(med - bare_median[conc]) * 1000:+.1f}" if bare_median else "-"
        rows.append(
            [
                label,
                conc,
                len(latencies),
                ms(lo),
                ms(med),
                ms(hi),
                f"{tlo:.1f} / {tmed:.1f} / {thi:.1f}",
                extra,
            ]
        )
    return rows, medians


async def bare_rows(agent: str) -> tuple[list[list[object]], dict[int, float]]:
    """The fake agent run directly: its own start-up and output cost, no cursorpipe."""
    env = dict(os.environ)

    async def one(prompt: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            agent,
            "--print",
            "--output-format",
            "stream-json",
            "--stream-partial-output",
            "--trust",
            "--mode",
            "ask",
            "--model",
            "auto",
            "--",
            prompt,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # as ManagedProcess does; it also matters for fairness: with Linux's scheduler
            # autogroups every new session gets its own CPU share.
            start_new_session=True,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and b'"type":"result"' in out

    return await _series("bare print", one, None)


async def subprocess_rows(agent: str, bare: dict[int, float]) -> list[list[object]]:
    """The subprocess transport through CursorClient."""
    config = CursorPipeConfig(strategy="subprocess", agent_bin=agent, max_retries=0)
    async with CursorClient(config) as client:

        async def one(prompt: str) -> None:
            text = await client.generate("auto", prompt)
            assert text == expected_reply(prompt), text

        rows, _ = await _series("subprocess", one, bare)
    return rows


async def acp_rows(agent: str, bare: dict[int, float]) -> list[list[object]]:
    """The acp transport through CursorClient (warm pool). Hook: returns a note row when
    ``AcpTransport`` is not available in this checkout."""
    try:
        from cursorpipe.transports.acp import AcpTransport  # noqa: F401
    except ImportError as exc:
        return [["acp", "-", "-", "-", "-", "-", f"not available ({exc})", "-"]]
    config = CursorPipeConfig(strategy="acp", agent_bin=agent, max_retries=0)
    async with CursorClient(config) as client:
        await client.warmup(max(CONCURRENCY))

        async def one(prompt: str) -> None:
            text = await client.generate("auto", prompt)
            assert text == expected_reply(prompt), text

        rows, _ = await _series("acp", one, bare)
    return rows


async def main() -> None:
    os.environ[ENV_LATENCY] = "0"
    agent = executable()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as state:
        os.environ[ENV_STATE_DIR] = state
        bare, bare_median = await bare_rows(agent)
        rows = bare + await subprocess_rows(agent, bare_median) + await acp_rows(agent, bare_median)
    print("CLI transports against the fake agent (zero simulated latency), per request:")
    print()
    print(table(HEADER, rows))
    print()
    print(
        "`bare print` spawns the fake `agent --print` directly (its own start-up and output); "
        "`median - bare` is what cursorpipe adds on top. `acp` keeps one process and a warm session "
        f"pool, so it pays no start-up per request. Rounds per level: {ROUNDS}."
    )


if __name__ == "__main__":
    asyncio.run(main())
