"""``SyncCursorClient`` against the emulator: every method of ``CursorClient`` without ``await``,
on the one sync bridge, with early break and Ctrl-C cancelling the upstream run."""

from __future__ import annotations

import _thread
import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from cursorpipe import (
    CursorClient,
    CursorPipeConfig,
    CursorSession,
    SyncBridge,
    SyncCursorClient,
    SyncCursorSession,
    TextDelta,
    TurnEnd,
)
from cursorpipe.errors import ConfigurationError
from cursorpipe.testing.emulator import Emulator, expected_reply


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emulator:
        yield emulator


@pytest.fixture
def bridge() -> Iterator[SyncBridge]:
    b = SyncBridge(name="test-sync-client")
    yield b
    b.close()


@pytest.fixture
def client(emu: Emulator, bridge: SyncBridge) -> Iterator[SyncCursorClient]:
    emu.behaviour.token_delay_s = 0.0
    emu.behaviour.chunks = 3
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    with SyncCursorClient(config, bridge=bridge) as c:
        yield c
    assert c.closed


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_request_methods_answer_like_the_async_client(client: SyncCursorClient) -> None:
    assert client.generate("auto", "sync hello") == expected_reply("sync hello")
    assert client.chat("auto", [{"role": "user", "content": "sync chat"}]) == expected_reply("sync chat")
    result = client.complete("auto", prompt="sync complete", system="be brief")
    assert result.text == expected_reply("sync complete", system="be brief")
    assert result.stop_reason == "stop" and result.transport == "connect"
    assert "".join(client.stream("auto", "sync stream")) == expected_reply("sync stream")
    events = list(client.events("auto", prompt="sync events"))
    assert isinstance(events[-1], TurnEnd)
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and not e.notice)
    assert text == expected_reply("sync events")
    assert "auto" in [m.id for m in client.list_models()]
    client.warmup(pool_size=0)
    assert client.transport_name == "connect"
    assert client.active_requests == 0


def test_typed_errors_pass_through(client: SyncCursorClient) -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        client.generate("auto", "x", max_tokens=0)


def test_session_keeps_the_conversation(client: SyncCursorClient) -> None:
    with client.session("auto") as session:
        assert isinstance(session, SyncCursorSession)
        assert session.prompt("first").text == expected_reply("first")
        chunks = list(session.stream_prompt("second"))
        assert "".join(chunks) == expected_reply("second", earlier=2, first="first", turns=1)
        assert session.turn_count == 2 and session.session_id
    assert session.discarded


def test_stream_broken_off_early_cancels_the_run_and_the_client_goes_on(
    client: SyncCursorClient, emu: Emulator
) -> None:
    emu.behaviour.token_delay_s = 0.3
    emu.behaviour.chunks = 20
    runs_before = len(emu.runs)
    for _chunk in client.stream("auto", "a long answer"):
        break
    assert client.active_requests == 0
    _wait_for(lambda: len(emu.runs) > runs_before and emu.runs[-1].finished)
    # live-dialect.md row 11: an early stop drops the stream like the SDK (no cancel_action)
    assert emu.runs[-1].outcome == "disconnected"
    emu.behaviour.token_delay_s = 0.0
    assert client.generate("auto", "after") == expected_reply("after")


def _interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_ctrl_c_during_a_stream_cancels_the_run(client: SyncCursorClient, emu: Emulator) -> None:
    emu.behaviour.token_delay_s = 0.3
    emu.behaviour.chunks = 20
    runs_before = len(emu.runs)
    got: list[str] = []
    timer = _interrupt_after(0.8)
    try:
        with pytest.raises(KeyboardInterrupt):
            got.extend(client.stream("auto", "interrupt me"))
    finally:
        timer.cancel()
    assert got and len(got) < 20
    assert client.active_requests == 0
    _wait_for(lambda: len(emu.runs) > runs_before and emu.runs[-1].finished)
    # live-dialect.md row 11: an early stop drops the stream like the SDK (no cancel_action)
    assert emu.runs[-1].outcome == "disconnected"


def test_ctrl_c_during_generate_cancels_before_returning(client: SyncCursorClient, emu: Emulator) -> None:
    emu.behaviour.token_delay_s = 0.3
    emu.behaviour.chunks = 20
    timer = _interrupt_after(0.8)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.generate("auto", "interrupt me too")
    finally:
        timer.cancel()
    # SyncBridge.run waits for the cancelled coroutine's cleanup before re-raising.
    assert client.active_requests == 0
    emu.behaviour.token_delay_s = 0.0
    assert client.generate("auto", "still fine") == expected_reply("still fine")


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("generate", CursorClient.generate),
        ("chat", CursorClient.chat),
        ("complete", CursorClient.complete),
        ("stream", CursorClient.stream),
        ("events", CursorClient.events),
        ("list_models", CursorClient.list_models),
        ("warmup", CursorClient.warmup),
        ("close", CursorClient.close),
    ],
)
def test_methods_mirror_the_async_signatures(name: str, source: Callable[..., object]) -> None:
    sync = SyncCursorClient(CursorPipeConfig(strategy="connect", api_key="crsr_not_a_real_key"))
    want = list(inspect.signature(source).parameters.values())[1:]
    assert list(inspect.signature(getattr(sync, name)).parameters.values()) == want
    assert getattr(sync, name).__doc__ == source.__doc__


def test_session_methods_mirror_the_async_session() -> None:
    for name in ("prompt", "events", "stream_prompt", "discard"):
        want = list(inspect.signature(getattr(CursorSession, name)).parameters.values())[1:]
        got = inspect.signature(getattr(SyncCursorSession, name)._fn).parameters.values()
        assert list(got)[1:] == want


def test_bridge_run_and_iterate_take_the_same_two_forms(bridge: SyncBridge) -> None:
    async def answer() -> int:
        return 42

    async def numbers() -> object:
        for i in range(3):
            yield i

    assert bridge.run(answer()) == bridge.run(answer) == 42
    assert list(bridge.iterate(numbers())) == list(bridge.iterate(numbers)) == [0, 1, 2]

    async def loop_of() -> int:
        return id(asyncio.get_running_loop())

    assert bridge.run(loop_of) == id(bridge.loop)
