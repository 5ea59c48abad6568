"""The Anthropic Messages route's added time to first token, beside the OpenAI route's.

    python bench/bench_anthropic.py                # MockTransport with zero delay (server overhead only)
    python bench/bench_anthropic.py --emulator     # connect transport against the Cursor API emulator
    python bench/bench_anthropic.py --requests 200 --repeats 3

One server process (as ``bench_server.py`` starts it) answers the same prompt streamed through
``POST /v1/chat/completions`` and ``POST /v1/messages``, alternating, at 1 and 16 concurrent
requests; the direct ``CursorClient.events()`` call in this process is the floor. Reported: the
time to first token of each route, and what each adds over the floor (difference of medians).
The load generator is ``bench_server.RawHTTP`` (raw HTTP/1.1 keep-alive, one connection per
in-flight request): httpx, used before, was itself the bottleneck at 16 concurrent (see
``bench_server.py``), for both checkouts alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

from _util import Recorder, quick
from bench_server import PROMPT, RawHTTP, emulator_process, load, one_direct_request, server_process

ERRORS: list[str] = []
CONCURRENCY = (1, 16)


#: The first chunk with answer text, per route (chat's role chunk has none).
MARKERS = {"/v1/chat/completions": b'"delta":{"content":"', "/v1/messages": b'"text_delta"'}


def stream_request(http: RawHTTP, path: str) -> bytes:
    """The streamed request of ``path``, built once per phase."""
    messages = [{"role": "user", "content": PROMPT}]
    body: dict[str, Any] = {"model": "auto", "messages": messages, "stream": True}
    if path == "/v1/messages":
        body["max_tokens"] = 1024
    return http.request_bytes(path, json.dumps(body).encode())


async def first_token(http: RawHTTP, path: str, data: bytes) -> tuple[float, float]:
    """(time to the first answer text, total time) of one streamed request on ``path``."""
    start = time.perf_counter()
    status, ttft, body = await http.send(data, MARKERS[path])
    took = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status}: {body[:300]!r}")
    if b"event: error" in body or b'data: {"error"' in body:
        ERRORS.append(f"{path}: {body[:200]!r}")
    return ttft, took


async def run(rec: Recorder, args: argparse.Namespace) -> None:
    from cursorpipe import CursorClient, CursorPipeConfig, MockTransport

    emu_cm: Any = emulator_process() if args.emulator else contextlib.nullcontext(("", ""))
    with emu_cm as (backend, key), server_process(backend, key) as (url, _proc):
        if backend:
            direct = CursorClient(CursorPipeConfig(strategy="connect", backend_url=backend, api_key=key))
        else:
            direct = CursorClient(transport=MockTransport())
        routes = {"chat": "/v1/chat/completions", "messages": "/v1/messages"}
        async with direct:
            await load(one_direct_request, direct, 4, 16)  # warm-up
            for concurrency in CONCURRENCY:
                total = max(args.requests, concurrency * 4)
                for _ in range(args.repeats):
                    for name, path in routes.items():
                        # Fresh connections per phase (see bench_server.py: idle keep-alive ones).
                        async with RawHTTP(url) as http:
                            data = stream_request(http, path)
                            fn = lambda h, p=path, d=data: first_token(h, p, d)  # noqa: E731
                            await load(fn, http, 4, 8)  # warm-up
                            _, ttfts, _ = await load(fn, http, concurrency, total)
                        rec.add(f"{name} TTFT c={concurrency}", [t * 1000 for t in ttfts], "ms")
                    _, ttfts, _ = await load(one_direct_request, direct, concurrency, total)
                    rec.add(f"direct TTFT c={concurrency}", [t * 1000 for t in ttfts], "ms")
                for name in routes:
                    rec.add_diff(
                        f"{name} added TTFT c={concurrency}",
                        f"{name} TTFT c={concurrency}",
                        f"direct TTFT c={concurrency}",
                        "ms",
                    )
    if ERRORS:
        rec.note(f"{len(ERRORS)} streams failed mid-way, e.g. {ERRORS[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", action="store_true", help="connect transport against the emulator")
    parser.add_argument("--requests", type=int, default=8 if quick() else 100)
    parser.add_argument("--repeats", type=int, default=1 if quick() else 2)
    args = parser.parse_args()
    rec = Recorder("anthropic", "cursorpipe-server: added time to first token, Messages vs chat completions")
    asyncio.run(run(rec, args))
    rec.finish()


if __name__ == "__main__":
    main()
