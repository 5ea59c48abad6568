"""A stateless turn's post-turn exchange runs after the caller has the turn's end (issue 16).

After ``turn_ended`` the service stores the turn's blob with a KV ``set_blob`` and only then ends the
stream (live-dialect.md row 10). A stateless caller needs none of that, so ``TurnEnd`` reaches it
first and a task owned by the transport answers the service and closes the stream: ``aclose`` waits
for it (bounded) and cancels it, and its failures are logged, never lost. A session turn still ends
after the exchange (its state must be whole then). Each test holds the exchange at a gate, so the
order is forced rather than timed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.emulator import Emulator, expected_reply
from cursorpipe.transports.connect import ConnectTransport

MODES = ["never", "always"]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Holds every post-turn exchange until set."""
    event = asyncio.Event()
    original = ConnectTransport._finish_turn

    async def gated(self: ConnectTransport, *args: Any) -> bool:
        await event.wait()
        return await original(self, *args)

    monkeypatch.setattr(ConnectTransport, "_finish_turn", gated)
    return event


def _client(emu: Emulator, mode: str) -> tuple[CursorClient, ConnectTransport]:
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=mode)
    transport = ConnectTransport(config)
    return CursorClient(config, transport=transport), transport


def _runs(emu: Emulator) -> list[Any]:
    return [r for r in emu.runs if r.run_request is not None]


_TURN_TASKS = ("cursorpipe-post-turn", "cursorpipe-pump", "cursorpipe-heartbeat", "cursorpipe-tool")


def _our_tasks() -> list[asyncio.Task[Any]]:
    """The transport's per-turn tasks still running (the h2 connection's reader is not one)."""
    return [t for t in asyncio.all_tasks() if t.get_name() in _TURN_TASKS and not t.done()]


#: While the post-turn exchange runs: its task, and the stream's reader and heartbeats it ends.
POST_TURN = ["cursorpipe-heartbeat", "cursorpipe-post-turn", "cursorpipe-pump"]


def _names() -> list[str]:
    return sorted(t.get_name() for t in _our_tasks())


@pytest.mark.parametrize("mode", MODES)
async def test_turn_end_reaches_the_caller_before_the_post_turn_exchange(
    emu: Emulator, gate: asyncio.Event, mode: str
) -> None:
    client, transport = _client(emu, mode)
    async with client:
        async with asyncio.timeout(10):  # the old order would wait here for the gate forever
            assert await client.generate("composer-2", "hello") == expected_reply("hello")
        (run,) = _runs(emu)
        assert run.outcome == "running" and not run.checkpoint_lost  # set_blob not answered yet
        assert _names() == POST_TURN
        gate.set()
        await transport.idle()
        assert run.outcome == "completed" and not run.checkpoint_lost
        assert _our_tasks() == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_session_turn_ends_only_after_its_post_turn_exchange(
    emu: Emulator, gate: asyncio.Event, mode: str
) -> None:
    # A session's state must be whole at TurnEnd: a caller may export it then (the team gateway).
    client, _transport = _client(emu, mode)
    async with client, client.session("composer-2") as s:
        first = asyncio.create_task(s.prompt("first"))
        await asyncio.sleep(0.05)
        assert not first.done()  # held: its post-turn exchange waits at the gate
        gate.set()
        async with asyncio.timeout(10):
            assert (await first).text == expected_reply("first")
        (run,) = _runs(emu)
        assert run.outcome == "completed" and not run.checkpoint_lost
        assert _our_tasks() == []
        assert (await s.prompt("second")).text == expected_reply("second", earlier=2, first="first", turns=1)


@pytest.mark.parametrize("mode", MODES)
async def test_client_close_ends_a_post_turn_exchange_that_does_not_finish(
    emu: Emulator, gate: asyncio.Event, mode: str
) -> None:
    client, _transport = _client(emu, mode)
    async with client:
        await client.generate("composer-2", "hello")
        assert _names() == POST_TURN
        (task,) = [t for t in _our_tasks() if t.get_name() == "cursorpipe-post-turn"]
    # aclose gave it a bounded wait, then cancelled it; its clean-up closed the stream.
    assert task.cancelled()
    assert _our_tasks() == []
    (run,) = _runs(emu)
    async with asyncio.timeout(10):
        while run.outcome == "running":
            await asyncio.sleep(0.01)
    assert run.outcome != "completed" and run.checkpoint_lost  # the emulator saw the stream go


@pytest.mark.parametrize("mode", MODES)
async def test_post_turn_failure_is_logged_and_the_stream_dropped(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    async def broken(self: ConnectTransport, *args: Any) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(ConnectTransport, "_finish_turn", broken)
    client, transport = _client(emu, mode)
    with caplog.at_level(logging.WARNING, logger="cursorpipe.connect"):
        async with client:
            assert await client.generate("composer-2", "one") == expected_reply("one")
            await transport.idle()
            assert "post-turn exchange failed (RuntimeError)" in caplog.text
            assert _our_tasks() == []
            monkeypatch.undo()
            # The dropped stream leaves the transport usable.
            assert await client.generate("composer-2", "two") == expected_reply("two")
            await transport.idle()
            assert _runs(emu)[-1].outcome == "completed"
