"""The server's per-request fast paths (issue 16) keep every behaviour of the slow ones: the
generation routes called by the guard directly, one socket write per loop step, the fanout's
light queue and the single-choice non-streaming read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from cursorpipe import MockTransport, TextDelta, TransportInfo, TurnEnd
from cursorpipe.server._fanout import END, GONE, Fanout
from cursorpipe.server._http import _CoalescingTransport, hardened_protocol

from .conftest import build, over_socket


class _Recorder:
    """A transport stand-in that records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = "peer"

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"{self.extra}:{name}"


async def test_writes_of_one_loop_step_reach_the_socket_as_one_write() -> None:
    real = _Recorder()
    transport: Any = _CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(bytearray(b"body"))
    assert real.writes == []  # held until the end of this step
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.writelines([b"a", b"b"])
    transport.close()  # what was written before closing goes first
    assert real.writes[-1] == b"ab" and real.closed
    transport.write(b"late")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"ab"  # nothing is written to a closed transport
    assert transport.get_extra_info("peername") == "peer:peername"  # the rest is the real one's


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11"])
async def test_keep_alive_answers_stay_whole_and_in_order(httptools: bool) -> None:
    app, _, client = build(pool_size=0)
    protocol = hardened_protocol(header_timeout_s=5, max_connections=64, httptools=httptools)
    async with over_socket(app, http=protocol, ws="none") as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        for i, last in ((1, False), (2, False), (3, True)):
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"q{i}"}]}).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                + (b"connection: close\r\n" if last else b"")
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
            assert answer["choices"][0]["message"]["content"] == f"echo: q{i}"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the whole answer
        writer.close()
    await client.close()


async def test_direct_routes_answer_errors_in_their_own_shape(served) -> None:
    s = await served(MockTransport())
    bad = await s.http.post("/v1/chat/completions", json={"model": "auto", "messages": "nope"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error" and bad.headers["x-request-id"]
    bad = await s.http.post("/v1/messages", json={"model": "auto", "messages": "nope", "max_tokens": 5})
    assert bad.status_code == 400 and bad.json()["type"] == "error"  # Anthropic's shape
    assert bad.headers["request-id"] == bad.headers["x-request-id"]
    bad = await s.http.post("/v1/responses", json={"model": "auto"})
    assert bad.status_code == 400 and "error" in bad.json()
    # Other methods on those paths are still routed: 405, in OpenAI's shape.
    wrong = await s.http.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "error" in wrong.json()
    ok = await s.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "echo: hi"


async def test_direct_route_unexpected_failure_is_a_500_in_openai_shape(served, monkeypatch) -> None:
    s = await served(MockTransport())

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(s.client, "build_request", boom)
    r = await s.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert s.app.state.cursorpipe.gate.in_use == 0


async def _events(*items: Any, pause_s: float = 0.0) -> AsyncGenerator[Any, None]:
    for item in items:
        if pause_s:
            await asyncio.sleep(pause_s)
        if isinstance(item, Exception):
            raise item
        yield item


async def test_fanout_times_out_for_keepalives_then_delivers_in_order() -> None:
    fanout = Fanout([_events(TextDelta("a"), TurnEnd("stop"), pause_s=0.2)])
    try:
        assert await fanout.next(0.01) is None  # nothing yet: time for a keep-alive
        first = await fanout.next(5)
        assert first is not None and first[0] == 0 and isinstance(first[1], TextDelta)
        second = await fanout.next(5)
        assert second is not None and isinstance(second[1], TurnEnd)
        assert await fanout.next(5) == (0, END)
        assert fanout.ready() is None
    finally:
        await fanout.aclose()


async def test_fanout_prime_keeps_what_it_read_and_raises_early_failures() -> None:
    info = TransportInfo(transport="mock", model="m2")
    fanout = Fanout([_events(info, TextDelta("a"))])
    try:
        assert await fanout.prime(5) is True
        assert fanout.peek_info() == info
        assert fanout.ready() == (0, info)  # nothing read while priming is lost
        item = fanout.ready() or await fanout.next(5)
        assert item is not None and isinstance(item[1], TextDelta)
    finally:
        await fanout.aclose()
    failing = Fanout([_events(info, ValueError("refused"))])
    with pytest.raises(ValueError, match="refused"):
        await failing.prime(5)
    await failing.aclose()


async def test_fanout_prime_reports_a_disconnect() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    fanout = Fanout([_events(TextDelta("late"), pause_s=5)])
    fanout.watch(receive)
    try:
        assert await fanout.prime(5) is False
        assert fanout.ready() == (-1, GONE)
    finally:
        await fanout.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["one-shot", "stream"])
@pytest.mark.parametrize("httptools", [True, False], ids=["httptools-hook", "h11-watcher"])
async def test_run_is_cancelled_when_its_connection_goes(httptools: bool, stream: bool) -> None:
    """The single-choice non-streaming read and the stream's fanout learn of a disconnect from
    the connection itself (httptools: the ``ON_GONE_KEY`` callback, no watcher task) or from a
    watcher task (h11): either way the run is cancelled at once, and the next request on a new
    connection is served."""
    mock = MockTransport(first_delay_s=30)
    app, _, client = build(mock, pool_size=0)
    protocol = hardened_protocol(header_timeout_s=5, max_connections=64, httptools=httptools)
    body = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "q"}], "stream": stream}
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    async with over_socket(app, http=protocol, ws="none") as url:
        port = int(url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        for _ in range(200):
            if mock.running == 1:
                break
            await asyncio.sleep(0.01)
        assert mock.running == 1
        writer.close()
        for _ in range(100):
            if mock.cancelled == 1:
                break
            await asyncio.sleep(0.01)
        assert mock.cancelled == 1 and mock.running == 0 and mock.completed == 0
        assert app.state.cursorpipe.gate.in_use == 0
        mock.first_delay_s = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.close()
    await client.close()


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11"])
async def test_body_in_two_parts_is_read_whole(httptools: bool) -> None:
    """A body that is not complete when the request starts is waited for (under the body
    timeout); one that is complete is read at once (httptools marks it ``BODY_READY_KEY``)."""
    app, _, client = build(pool_size=0)
    protocol = hardened_protocol(header_timeout_s=5, max_connections=64, httptools=httptools)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "split body"}]}).encode()
    async with over_socket(app, http=protocol, ws="none") as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body[:10]
        )
        await asyncio.sleep(0.2)
        writer.write(body[10:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        assert answer["choices"][0]["message"]["content"] == "echo: split body"
        writer.close()
    await client.close()
