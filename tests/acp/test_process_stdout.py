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


# Echoes every line of stdin with the size of the read that brought it, until end of input.
ECHO_READS = (
    "import os, sys\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "while True:\n"
    "    data = os.read(0, 65536)\n"
    "    if not data:\n"
    "        break\n"
    "    sys.stdout.write(f'{len(data)}\\n'); sys.stdout.flush()\n"
)


async def test_writes_of_one_loop_step_reach_the_child_together_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = await ManagedProcess.spawn([sys.executable, "-c", ECHO_READS], env={}, name="echo")
    assert await asyncio.wait_for(proc.readline(), 10) == b"ready\n"  # the child waits in read()
    lines = [f"line {i}\n".encode() for i in range(5)]
    stdin = proc._proc.stdin
    assert stdin is not None
    writes: list[bytes] = []
    write = stdin.write
    monkeypatch.setattr(stdin, "write", lambda data: (writes.append(data), write(data))[1])
    for line in lines:
        assert proc.write_nowait(line) is False
    assert writes == []  # nothing is written before the step ends...
    await asyncio.sleep(0)
    assert writes == [b"".join(lines)]  # ...then everything at once, in order
    # One write at the end of the step: the child's first read holds every line.
    first = await asyncio.wait_for(proc.readline(), 10)
    assert int(first) == sum(len(line) for line in lines)
    # Queued lines are written before the end of input, even when stdin closes in the same step.
    proc.write_nowait(b"last\n")
    proc.close_stdin()
    assert await asyncio.wait_for(proc.readline(), 10) == b"5\n"
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await proc.close()
