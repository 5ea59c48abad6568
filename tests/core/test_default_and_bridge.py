from __future__ import annotations

import asyncio
import threading

import cursorpipe
import pytest
from cursorpipe import AuthenticationError, CursorClient, MockTransport, SyncBridge, _default


@pytest.fixture
def mock_default(monkeypatch: pytest.MonkeyPatch) -> MockTransport:
    mock = MockTransport()
    original = CursorClient.__init__

    def init(self: CursorClient, config: object = None, *, transport: object = None) -> None:
        original(self, config, transport=transport or mock)  # type: ignore[arg-type]

    monkeypatch.setattr(CursorClient, "__init__", init)
    return mock


async def test_module_level_functions_share_a_lazy_client(mock_default: MockTransport) -> None:
    assert await cursorpipe.generate("auto", "one") == "echo: one"
    first = cursorpipe.default_client()
    assert await cursorpipe.chat("auto", [{"role": "user", "content": "two"}]) == "echo: two"
    assert "".join([c async for c in cursorpipe.stream("auto", "three")]) == "echo: three"
    await cursorpipe.warmup(3)
    assert cursorpipe.default_client() is first
    assert mock_default.started_with == [3]
    await cursorpipe.close()
    await cursorpipe.close()
    assert first.closed
    assert cursorpipe.default_client() is not first
    await cursorpipe.close()


def test_default_client_is_per_loop(mock_default: MockTransport) -> None:
    async def grab() -> CursorClient:
        client = cursorpipe.default_client()
        await cursorpipe.close()
        return client

    assert asyncio.run(grab()) is not asyncio.run(grab())
    assert not _default._clients or all(c.closed for c in _default._clients.values())


def test_bridge_runs_coroutines_and_iterators_on_one_loop() -> None:
    bridge = SyncBridge(name="test-bridge")
    try:
        loops = {bridge.run(asyncio.sleep(0, result=id(asyncio.get_event_loop_policy())))}
        assert len(loops) == 1
        client = bridge.run(lambda: _make_client())
        assert bridge.run(lambda: client.generate("auto", "sync hi")) == "echo: sync hi"
        chunks = list(bridge.iterate(lambda: client.stream("auto", "a b c")))
        assert "".join(chunks) == "echo: a b c"
        assert bridge.run(lambda: _loop_id()) == bridge.run(lambda: _loop_id())
        bridge.run(lambda: client.close())
    finally:
        bridge.close()
        bridge.close()


def test_bridge_early_break_closes_the_async_iterator() -> None:
    bridge = SyncBridge()
    mock = MockTransport()
    try:
        client = bridge.run(lambda: _make_client(mock))
        for _chunk in bridge.iterate(lambda: client.stream("auto", "a b c d e f g")):
            break
        assert bridge.run(lambda: _count(client)) == 0
        assert mock.cancelled == 1
    finally:
        bridge.close()


def test_bridge_propagates_typed_errors() -> None:
    bridge = SyncBridge()
    mock = MockTransport()
    mock.queue(AuthenticationError("log in first"))
    try:
        client = bridge.run(lambda: _make_client(mock))
        with pytest.raises(AuthenticationError, match="log in"):
            bridge.run(lambda: client.generate("auto", "x"))
    finally:
        bridge.close()


def test_bridge_refuses_reentry_from_its_own_loop() -> None:
    bridge = SyncBridge()
    try:

        async def inner() -> None:
            bridge.run(asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="inside the bridge"):
            bridge.run(inner)
    finally:
        bridge.close()


def test_bridge_works_from_many_threads() -> None:
    bridge = SyncBridge()
    try:
        client = bridge.run(lambda: _make_client())
        results: list[str] = []

        def worker(i: int) -> None:
            results.append(bridge.run(lambda: client.generate("auto", f"t{i}")))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == sorted(f"echo: t{i}" for i in range(8))
    finally:
        bridge.close()


async def _make_client(mock: MockTransport | None = None) -> CursorClient:
    return CursorClient(transport=mock or MockTransport())


async def _loop_id() -> int:
    return id(asyncio.get_running_loop())


async def _count(client: CursorClient) -> int:
    return client.active_requests
