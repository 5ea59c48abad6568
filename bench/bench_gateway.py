"""Benchmark the team gateway: session state in Redis shared by three replicas vs in-process state.

    python bench/bench_gateway.py                 # 3 callers, 12 concurrent workers
    python bench/bench_gateway.py --workers 24 --turns 10

Every configuration runs ``cursorpipe-server`` processes in passthrough mode against the Cursor API
emulator (one account per caller key, in this process's thread) and drives them with httpx:

- ``in-process``: one replica, sessions in its memory (no ``CURSORPIPE_STATE_URL``);
- ``redis x1``: one replica with its sessions in Redis (what the store itself costs);
- ``redis x3``: three replicas sharing one Redis, requests spread round-robin over them.

Each worker is one caller's session: ``--turns`` session turns (each checked against the
emulator's expected reply, which states how many earlier messages the model saw, so a turn that
lost or mixed up history is caught), then the same number of stateless requests (each checked for
its own prompt). A worker's answers never belong to another caller (cross-talk is counted and must
be 0). Figures: requests per second over the whole run and median latency per kind of request; the
latency Redis adds is the difference of medians against ``in-process``. The emulator shares this
process (and the machine's 2 cores), so absolute figures are lower than on a real deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from _util import Recorder, quick

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "gateway"))
from _redis_server import RedisServer, free_port  # noqa: E402
from cursorpipe.testing.emulator import Emulator, expected_reply  # noqa: E402

KEYS = {f"crsr_bench_caller_{i}": f"caller{i}" for i in range(3)}


@contextmanager
def replica(env: dict[str, str], workdir: Path) -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).parent / "cursorpipe-server"
    proc = subprocess.Popen(
        [str(exe), "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("replica did not become ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def worker(
    urls: list[str], n: int, key: str, turns: int, lat: dict[str, list[float]], errors: list[str]
) -> None:
    sid = f"bench-{uuid.uuid4().hex[:10]}"
    auth = {"authorization": f"Bearer {key}"}
    first = f"{key[-1]}-{n}-t0"
    async with httpx.AsyncClient(timeout=120) as http:
        for t in range(2 * turns):
            url = urls[(n + t) % len(urls)]
            session = t < turns
            text = f"{key[-1]}-{n}-t{t}"
            headers = {**auth, "x-cursor-session-id": sid} if session else auth
            body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
            started = time.perf_counter()
            r = await http.post(url + "/v1/chat/completions", json=body, headers=headers)
            lat["session" if session else "stateless"].append(time.perf_counter() - started)
            want = (
                expected_reply(text, earlier=2 * t, first=first, turns=t)
                if session and t
                else expected_reply(text)
            )
            got = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
            if got != want:
                errors.append(f"{r.status_code}: {got[:120]!r} != {want[:120]!r}")


async def drive(urls: list[str], workers: int, turns: int) -> tuple[float, dict[str, list[float]], list[str]]:
    lat: dict[str, list[float]] = {"session": [], "stateless": []}
    errors: list[str] = []
    keys = list(KEYS)
    started = time.perf_counter()
    await asyncio.gather(*(worker(urls, n, keys[n % len(keys)], turns, lat, errors) for n in range(workers)))
    return time.perf_counter() - started, lat, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workers, turns, rounds = (3, 2, 1) if quick() else (args.workers, args.turns, args.rounds)
    rec = Recorder("gateway", f"Team gateway, passthrough mode: {workers} concurrent sessions of 3 callers")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        emu = stack.enter_context(Emulator.start_in_thread(accounts=KEYS))
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        stack.callback(redis.stop)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CURSOR_", "CURSORPIPE_"))}
        base.update(
            CURSOR_BACKEND_URL=emu.url,
            CURSORPIPE_STRATEGY="connect",
            CURSORPIPE_AUTH_MODE="passthrough",
            CURSORPIPE_POOL_SIZE="0",
            CURSORPIPE_LOG_LEVEL="warning",
            CURSORPIPE_MAX_CONCURRENCY="256",
            CURSORPIPE_PER_KEY_CONCURRENCY="64",
            CURSORPIPE_QUEUE_TIMEOUT_S="60",
            HOME=tmp,
        )
        shared = {**base, "CURSORPIPE_STATE_URL": redis.url}
        configs = {"in-process": (base, 1), "redis x1": (shared, 1), "redis x3": (shared, 3)}
        urls = {
            name: [stack.enter_context(replica(dict(env), Path(tmp))) for _ in range(count)]
            for name, (env, count) in configs.items()
        }
        for name in configs:
            asyncio.run(drive(urls[name], 1, 1))  # warm: first exchange, connections
        # Interleaved rounds, rotating which configuration goes first, so the shared machine's
        # changing load hits all of them alike.
        names = list(configs)
        for round_ in range(rounds):
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                seconds, lat, errors = asyncio.run(drive(urls[name], workers, turns))
                total = len(lat["session"]) + len(lat["stateless"])
                rec.add(f"{name}: throughput", total / seconds, "req/s", "higher")
                rec.add(f"{name}: session turn latency", [x * 1000 for x in lat["session"]], "ms")
                rec.add(f"{name}: stateless latency", [x * 1000 for x in lat["stateless"]], "ms")
                rec.add(f"{name}: wrong or cross-talk answers", len(errors), "count")
                if errors:
                    rec.note(f"{name}: first wrong answer: {errors[0]}")
        for name in ("redis x1", "redis x3"):
            rec.add_diff(
                f"{name}: added session latency vs in-process",
                f"{name}: session turn latency",
                "in-process: session turn latency",
                "ms",
            )
        med = statistics.median
        rec.note(
            f"{rounds} interleaved rounds of {workers} workers x ({turns} session turns + {turns} stateless "
            "requests) per configuration; "
            f"emulator runs served: {len(emu.runs)}; session latency medians (ms): "
            + ", ".join(
                f"{m.key.split(':')[0]} {med(m.samples):.1f}"
                for m in rec.metrics.values()
                if m.key.endswith("session turn latency")
            )
        )
    rec.finish()


if __name__ == "__main__":
    main()
