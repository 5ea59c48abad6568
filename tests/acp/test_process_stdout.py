"""``ManagedProcess`` with ``direct_stdout``: the acp connection's stdout path (issue 16: bytes go
to a callback from the loop's read callback, no reader task)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from cursorpipe.transports._process import ManagedProcess

# Writes two lines at once, a third after reading one line of stdin, then exits.
CHILD = (
    "import sys\n"
    "sys.stdout.write('one\\ntwo\\n'); sys.stdout.flush()\n"
    "line = sys.stdin.readline()\n"
    "sys.stdout.write('got ' + line); sys.stdout.flush()\n"
)


async def test_direct_stdout_delivers_every_byte_then_end_of_file() -> None:
    proc = await ManagedProcess.spawn([sys.executable, "-c", CHILD], env={}, name="child", direct_stdout=True)
    got: list[bytes] = []
    ended = asyncio.Event()

    def sink(data: bytes) -> None:
        got.append(data)
        if not data:
            ended.set()

    # Whatever arrived before the sink was set is handed over first, in order.
    await asyncio.sleep(0.2)
    proc.set_stdout_sink(sink)
    assert proc.write_nowait(b"ping\n") is False  # a short write never asks for a drain
    await asyncio.wait_for(ended.wait(), 10)
    assert b"".join(got) == b"one\ntwo\ngot ping\n"
    assert got[-1] == b"" and got.count(b"") == 1
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await proc.close()


async def test_sink_needs_a_direct_process_and_writes_need_stdin() -> None:
    proc = await ManagedProcess.spawn([sys.executable, "-c", "pass"], env={}, name="plain")
    with pytest.raises(RuntimeError, match="direct_stdout"):
        proc.set_stdout_sink(lambda data: None)
    await proc.close()
    with pytest.raises(BrokenPipeError):
        proc.write_nowait(b"x\n")
    with pytest.raises(BrokenPipeError):
        await proc.drain()
