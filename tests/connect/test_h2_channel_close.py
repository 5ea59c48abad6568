"""How a finished HTTP/2 ``Run`` stream is closed (issue 16).

The Connect end-of-stream envelope often arrives a packet before the HTTP/2 END_STREAM. A call
whose answer is complete must then be half-closed with END_STREAM like a fully ended one: a
RST_STREAM(CANCEL) would cancel a call that succeeded and draw a second RST_STREAM from h2 when the
server's END_STREAM lands. A call the caller abandoned mid-answer is still reset."""

from __future__ import annotations

from typing import Any

from cursorpipe._codecs.connect import encode_end_stream, encode_envelope
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.transports.connect._h2 import H2Channel, _Stream


class _Conn:
    """Records what the channel asks of its connection."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.calls: list[tuple[str, Any]] = []

    async def open(self, path: str, headers: Any, *, flush: bool = True) -> _Stream:
        return self.stream

    async def send(
        self, stream: _Stream, data: bytes, *, end_stream: bool = False, flush: bool = True
    ) -> None:
        self.calls.append(("send", (data, end_stream)))

    async def reset(self, stream: _Stream) -> None:
        self.calls.append(("reset", stream.id))

    def release(self, stream: _Stream) -> None:
        self.calls.append(("release", stream.id))


def _answering_stream(*, end_envelope: bool) -> _Stream:
    stream = _Stream(1)
    stream.headers = {":status": "200", "content-type": "application/connect+proto"}
    stream.headers_ready.set()
    msg = pb.AgentServerMessage()
    msg.interaction_update.text_delta.text = "hi"
    stream.data.put_nowait(encode_envelope(msg.SerializeToString()))
    if end_envelope:
        stream.data.put_nowait(encode_end_stream())
    return stream


async def _opened(stream: _Stream) -> tuple[H2Channel, _Conn]:
    conn = _Conn(stream)
    channel = H2Channel(conn, {"authorization": "Bearer t"})  # type: ignore[arg-type]
    await channel.start(pb.AgentClientMessage())
    conn.calls.clear()
    return channel, conn


async def test_answer_complete_before_http2_end_stream_is_half_closed() -> None:
    stream = _answering_stream(end_envelope=True)  # END_STREAM not seen yet: stream.ended is False
    channel, conn = await _opened(stream)
    texts = [m.interaction_update.text_delta.text async for m in channel.messages()]
    assert texts == ["hi"]
    assert not stream.ended
    await channel.aclose()
    assert conn.calls == [("send", (b"", True)), ("release", 1)]


async def test_abandoned_answer_is_reset() -> None:
    stream = _answering_stream(end_envelope=False)
    channel, conn = await _opened(stream)
    messages = channel.messages()
    first = await messages.__anext__()
    assert first.interaction_update.text_delta.text == "hi"
    await messages.aclose()  # the caller stopped before the server finished
    await channel.aclose()
    assert conn.calls == [("reset", 1)]
