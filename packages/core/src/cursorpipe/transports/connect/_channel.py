"""What the turn loop needs from a wire: send client messages, iterate server messages.

Two implementations: :mod:`._http1` (``RunSSE`` + ``BidiAppend`` over httpx, connect.md §5.7) and
:mod:`._h2` (full-duplex ``Run`` over the ``h2`` library, §5.6).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Protocol

from ..._codecs.connect import ConnectError, EnvelopeDecoder
from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import ProtocolError, StreamDroppedError

__all__ = ["Channel", "ConnectCallError", "decode_server_messages"]


class ConnectCallError(Exception):
    """A Connect error from the server (unary status or end-stream ``error``), kept raw so the
    transport can react to ``unauthenticated`` (connect.md §2.4) before mapping it."""

    def __init__(
        self, error: ConnectError, *, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(error.code)
        self.error = error
        self.status = status
        self.headers = dict(headers or {})


class Channel(Protocol):
    """One attempt of one turn on the wire."""

    #: "run" (HTTP/2 bidi) or "runsse" (RunSSE + BidiAppend).
    kind: str

    async def start(self, first: pb.AgentClientMessage) -> None:
        """Open the call and send the run request (may return before the response headers)."""

    async def send(self, message: pb.AgentClientMessage) -> None:
        """Send one more client message (ordered)."""

    async def send_many(self, messages: Sequence[pb.AgentClientMessage]) -> None:
        """Send several client messages in order (as ``send`` each, batched where the wire can)."""

    def messages(self) -> AsyncGenerator[pb.AgentServerMessage, None]:
        """Server messages until the stream ends; raises ``ConnectCallError`` for an end-stream
        error and cursorpipe errors for transport failures."""

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the server to end its side (after a cancel)."""

    async def aclose(self) -> None:
        """Release the call (idempotent); never raises."""

    async def abort(self) -> None:
        """Drop the call at once (the caller stopped early): no flushing, no waiting; idempotent,
        never raises."""


def parse_server_message(payload: bytes) -> pb.AgentServerMessage:
    """Decode one ``AgentServerMessage``; malformed bytes are a ``ProtocolError``."""
    msg = pb.AgentServerMessage()
    try:
        msg.ParseFromString(payload)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ProtocolError("Cursor sent an AgentServerMessage that is not valid protobuf") from exc
    return msg


async def decode_server_messages(
    chunks: AsyncIterator[bytes], headers: Mapping[str, str]
) -> AsyncGenerator[pb.AgentServerMessage, None]:
    """Envelopes → messages. Returns normally on a success end-stream or on EOF between frames (the
    caller decides whether EOF without ``turn_ended`` is a drop, connect.md §7); raises on an
    end-stream error, ``ProtocolError`` on a malformed frame (after yielding the good frames that
    came before it) and ``StreamDroppedError`` on EOF inside a frame."""
    decoder = EnvelopeDecoder()
    async for chunk in chunks:
        frames, error = decoder.feed_partial(chunk)
        for frame in frames:
            if frame.end_stream is not None:
                if frame.end_stream.error is not None:
                    merged = dict(headers)
                    for key, values in frame.end_stream.metadata.items():
                        if values:
                            merged.setdefault(key, values[0])
                    raise ConnectCallError(frame.end_stream.error, status=200, headers=merged)
                if error is not None:
                    raise error  # bytes after the end-stream frame
                return
            yield parse_server_message(frame.payload)
        if error is not None:
            raise error
    try:
        decoder.close()
    except ProtocolError as exc:
        # The body ended inside a frame: the connection was cut mid-message (connect.md §7), so it
        # is a drop (resumable from a checkpoint), not a peer speaking another protocol.
        raise StreamDroppedError(f"Cursor's stream ended inside a frame: {exc}") from exc
