"""The subprocess transport's overhead (one ``agent --print`` per request) against the fake agent
with zero simulated latency, at 1, 8 and 32 concurrent requests (acp: ``bench_acp.py``).

Measured in one run so they compare fairly:

* ``bare print``: the fake ``agent --print --output-format stream-json --stream-partial-output``
  spawned directly with asyncio and read to the end (no cursorpipe): the cost of the fake itself;
* ``subprocess``: ``CursorClient(strategy="subprocess").generate`` — the difference to the bare row
  is cursorpipe's overhead (env, argv, parser, event plumbing, staged process shutdown);
* ``paired``: at 1 concurrent, one bare run then one transport run, back to back, many times.

Latency figures are over every request of every round; throughput is requests per second of each
round; CPU per request is this process's ``time.process_time`` (the client) and the reaped
``--print`` children's (the agents).

    .venv/bin/python bench/bench_cli.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable

from _util import Recorder, children_cpu_s, quick
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_LATENCY, ENV_STATE_DIR, expected_reply

CONCURRENCY = (1, 8, 32)
ROUNDS = {1: 2, 8: 1, 32: 1} if quick() else {1: 8, 8: 2, 32: 1}
PAIRS = 2 if quick() else 12

One = Callable[[str], Awaitable[None]]


async def _series(rec: Recorder, label: str, one: One) -> None:
    await one(f"{label} warm-up")
    for conc in CONCURRENCY:
        key = f"{label}, {conc} concurrent"
        for r in range(ROUNDS[conc]):
            prompts = [f"{label} {conc} {r} {i}" for i in range(conc)]

            async def timed(prompt: str) -> float:
                start = time.perf_counter()
                await one(prompt)
                return time.perf_counter() - start

            cpu0, kids0 = time.process_time(), children_cpu_s()
            start = time.perf_counter()
            latencies = await asyncio.gather(*(timed(p) for p in prompts))
            wall = time.perf_counter() - start
            rec.add(f"{key}: latency", [t * 1000 for t in latencies], "ms")
            rec.add(f"{key}: throughput", conc / wall, "req/s", better="higher")
            rec.add(f"{key}: client CPU per request", (time.process_time() - cpu0) * 1000 / conc, "ms")
            # One agent process per request, reaped by asyncio: counted as this process's children.
            rec.add(f"{key}: agent CPU per request", (children_cpu_s() - kids0) * 1000 / conc, "ms")
        if label != "bare print":
            rec.add_diff(
                f"{key}: median latency minus bare print",
                f"{key}: latency",
                f"bare print, {conc} concurrent: latency",
                "ms",
            )


def bare_print(agent: str) -> One:
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

    return one


async def paired(rec: Recorder, bare: One, transport: One) -> None:
    """At 1 concurrent, alternate a bare run and a transport run and record each pair's difference:
    the overhead is a few ms on top of ~100 ms of agent start-up, which separate series (minutes
    apart on a shared machine) cannot resolve."""
    for i in range(PAIRS):
        start = time.perf_counter()
        await bare(f"pair {i}")
        mid = time.perf_counter()
        await transport(f"pair {i}")
        end = time.perf_counter()
        rec.add(
            "subprocess minus bare print, 1 concurrent, paired", ((end - mid) - (mid - start)) * 1000, "ms"
        )


async def main() -> None:
    rec = Recorder("cli", "CLI transports against the fake agent (zero simulated latency), per request.")
    os.environ[ENV_LATENCY] = "0"
    agent = executable()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as state:
        os.environ[ENV_STATE_DIR] = state
        bare = bare_print(agent)
        config = CursorPipeConfig(strategy="subprocess", agent_bin=agent, max_retries=0)
        async with CursorClient(config) as client:

            async def via_transport(prompt: str) -> None:
                text = await client.generate("auto", prompt)
                assert text == expected_reply(prompt), text

            await _series(rec, "bare print", bare)
            await _series(rec, "subprocess", via_transport)
            await paired(rec, bare, via_transport)
    rec.note(
        "`bare print` spawns the fake `agent --print` directly (its own start-up and output); "
        "`minus bare print` is what cursorpipe adds on top (a difference of medians; `paired` is the "
        f"median of back-to-back pairs). Rounds per level: {ROUNDS}; pairs: {PAIRS}. acp: `bench_acp.py`."
    )
    rec.finish()


if __name__ == "__main__":
    asyncio.run(main())
