"""The client's own event pipeline, with no transport cost: ``MockTransport`` answers at once.

Every microsecond measured is cursorpipe's per-turn and per-event plumbing between a transport
and the caller (retries and the turn's deadline, the output limiter, emulated-tool parsing where
the transport has no native tools, the validation stage, the fold into a result). Each case runs
many turns of 50 text deltas; the figure is this process's CPU time per turn
(``time.process_time``), so wall-clock noise from the shared machine does not enter.

    .venv/bin/python bench/bench_client.py
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from _util import Recorder, quick
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.transports.base import TransportCapabilities
from cursorpipe.types import TextDelta, TurnEnd, Usage, UsageEvent

DELTAS = 50
TURNS = 30 if quick() else 600
SAMPLES = 2 if quick() else 7
REPLY = [TextDelta("word ") for _ in range(DELTAS - 1)] + [
    TextDelta('{"ok": true}'),
    UsageEvent(Usage(input_tokens=10, output_tokens=60)),
    TurnEnd("stop", Usage(input_tokens=10, output_tokens=60)),
]


def _client(native_tools: bool) -> CursorClient:
    caps = TransportCapabilities(native_tools=native_tools, real_usage=True)
    mock = MockTransport(script=lambda request, session: REPLY, capabilities=caps)
    return CursorClient(CursorPipeConfig(max_retries=2), transport=mock)


async def _drain_events(client: CursorClient) -> None:
    async for _ in client.events("auto", prompt="hi"):
        pass


async def _complete(client: CursorClient) -> None:
    await client.complete("auto", prompt="hi")


async def _complete_json(client: CursorClient) -> None:
    await client.complete("auto", prompt="hi", response_format={"type": "json_object"}, max_tokens=None)


CASES: dict[str, Callable[[CursorClient], Awaitable[None]]] = {
    "events() drained, no limits": _drain_events,
    "complete(), default max_tokens": _complete,
    "complete(), json_object validated": _complete_json,
}


async def main() -> None:
    rec = Recorder("client", "CursorClient's pipeline over an instant MockTransport, per turn of 50 deltas.")
    for native in (False, True):
        kind = "native tools" if native else "emulated-tools transport"
        async with _client(native) as client:
            for name, case in CASES.items():
                await case(client)  # the first turn pays imports and caches
                samples = []
                for _ in range(SAMPLES):
                    cpu0 = time.process_time()
                    for _ in range(TURNS):
                        await case(client)
                    samples.append((time.process_time() - cpu0) * 1e6 / TURNS)
                rec.add(f"{name} ({kind}): client CPU per turn", samples, "us")
    rec.note(
        "CPU per turn of this process over many sequential turns; MockTransport yields 50 text "
        "deltas, a UsageEvent and TurnEnd with no I/O, so the figure is the pipeline's own cost."
    )
    rec.finish()


if __name__ == "__main__":
    asyncio.run(main())
