"""Cancellation reaches the caller through the transports' clean-up paths (issue 13): the RunSSE
drain and the process shutdown clean up but never swallow a ``CancelledError`` aimed at the caller."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
from cursorpipe.transports._process import ManagedProcess
from cursorpipe.transports.connect._http1 import Http1Channel


async def _channel_with_pump(pump: asyncio.Task[None]) -> tuple[httpx.AsyncClient, Http1Channel]:
    http = httpx.AsyncClient()
    channel = Http1Channel(http, "http://127.0.0.1:9", {}, "req-1")
    channel._pump = pump
    return http, channel


async def test_http1_drain_propagates_a_cancel_aimed_at_the_caller() -> None:
    pump = asyncio.create_task(asyncio.sleep(60))
    http, channel = await _channel_with_pump(pump)
    try:
        waiter = asyncio.create_task(channel.drain(30.0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert waiter.cancelled()
        assert not pump.done(), "drain must not cancel the pump it waits for"
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await http.aclose()


async def test_http1_drain_of_a_cancelled_pump_is_no_error_and_bounded() -> None:
    pump = asyncio.create_task(asyncio.sleep(60))
    http, channel = await _channel_with_pump(pump)
    try:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await channel.drain(5.0)  # returns: the pump's own cancellation is not the caller's
        slow = asyncio.create_task(asyncio.sleep(60))
        channel._pump = slow
        loop = asyncio.get_running_loop()
        started = loop.time()
        await channel.drain(0.05)
        assert loop.time() - started < 5.0
        assert not slow.done(), "a timed-out drain leaves the pump running"
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
    finally:
        await http.aclose()


async def _spawn_stubborn() -> ManagedProcess:
    # Ignores end of stdin and SIGTERM, so shutdown has to go all the way to SIGKILL.
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
        "time.sleep(60)\n"
    )
    return await ManagedProcess.spawn([sys.executable, "-c", code], env={}, name="stubborn")


async def test_process_close_propagates_cancel_and_still_reaps_the_child() -> None:
    proc = await _spawn_stubborn()
    closer = asyncio.create_task(proc.close(stdin_wait_s=0.2, terminate_wait_s=0.2))
    await asyncio.sleep(0.05)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    # The shielded shutdown keeps going: the child is killed and reaped.
    async with asyncio.timeout(10):
        code = await proc.wait()
    assert code != 0
    assert proc.returncode is not None


async def test_process_close_completes_and_reports_the_exit_code() -> None:
    proc = await _spawn_stubborn()
    code = await proc.close(stdin_wait_s=0.1, terminate_wait_s=0.1)
    assert code is not None and code < 0  # killed by a signal
    assert await proc.close() == code  # idempotent
