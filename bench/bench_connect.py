"""Per-turn overhead and time to first token of the connect transport against the emulator, next
to a raw minimal exchange with the same emulator (the floor), for both wires: full-duplex HTTP/2
``Run`` (h2c) and ``RunSSE`` + ``BidiAppend`` (HTTP/1.1).

    .venv/bin/python bench/bench_connect.py [--turns 30]

The emulator runs in a separate process so it does not share our event loop. The floor does the
least a correct client must do on the same wire (one pre-fetched token, a run request, answers to
the KV and request-context requests, envelopes decoded, and after ``turn_ended`` the answers the
service still needs until its end-stream) with no cursorpipe layers: no model validation, no
CursorClient pipeline, no turn machine, no heartbeat task. Overhead = transport minus floor, both as
the median of back-to-back pairs and as the difference of medians; CPU per turn is this process's
``time.process_time``. Nothing here asserts on times.

A turn's total is the time until the caller has the turn's end (``turn_ended`` for the floor, the
end of ``client.stream`` for the transport); its CPU covers the whole exchange, including the
post-turn work, which may finish after the caller has the turn's end.

Measurement fix (issue 16, session 4): the floor used to stop at ``turn_ended``: on h2 it
half-closed at once and read to the end without answering, on RunSSE it closed the response. The
live service stores the turn's blob with a KV ``set_blob`` after ``turn_ended`` and needs the
answer before it ends the stream (docs/live-dialect.md row 10; the emulator enforces it and marks
the checkpoint lost otherwise), so that floor skipped a required exchange and its CPU figure was
too low. It now answers until the end-stream (its total still stops at ``turn_ended``), and the
transport's CPU window waits for its background post-turn work (``ConnectTransport.idle`` where
the checkout has it) so that work is not billed to the next path of the round robin. Both apply
to the baseline and the new checkout alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import Recorder, import_first, quick
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe._proto.aiserver.v1 import aiserver_pb2 as ai
from cursorpipe.testing.emulator import DEFAULT_API_KEY
from cursorpipe.transports.connect import ConnectTransport

# The codec may move into a shared private package (issue 13); use whichever this checkout has.
_codec = import_first("cursorpipe.transports.connect._codec", "cursorpipe._codecs.connect")
EnvelopeDecoder, encode_envelope = _codec.EnvelopeDecoder, _codec.encode_envelope

MODEL = "composer-2"


# ----------------------------------------------------------------------------------------------
# the emulator in its own process
# ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_process() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cursorpipe.testing.emulator", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the emulator did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


# ----------------------------------------------------------------------------------------------
# the floor: raw minimal exchanges
# ----------------------------------------------------------------------------------------------
def _run_request(text: str) -> bytes:
    msg = pb.AgentClientMessage()
    run = msg.run_request
    run.conversation_state.SetInParent()
    run.mcp_tools.SetInParent()
    run.action.user_message_action.user_message.text = text
    run.action.user_message_action.user_message.mode = pb.AGENT_MODE_ASK
    run.requested_model.model_id = MODEL
    run.conversation_id = str(uuid.uuid4())
    run.run_id = str(uuid.uuid4())
    run.next_interaction_query_id = 0
    return msg.SerializeToString()


def _answers(msg: pb.AgentServerMessage, blobs: dict[bytes, bytes]) -> list[bytes]:
    case = msg.WhichOneof("message")
    out = pb.AgentClientMessage()
    if case == "kv_server_message":
        kv = msg.kv_server_message
        out.kv_client_message.id = kv.id
        if kv.HasField("set_blob_args"):
            blobs[kv.set_blob_args.blob_id] = kv.set_blob_args.blob_data
            out.kv_client_message.set_blob_result.SetInParent()
        else:
            out.kv_client_message.get_blob_result.SetInParent()
            data = blobs.get(kv.get_blob_args.blob_id)
            if data is not None:
                out.kv_client_message.get_blob_result.blob_data = data
        return [out.SerializeToString()]
    if case == "exec_server_message":
        ex = msg.exec_server_message
        out.exec_client_message.id = ex.id
        out.exec_client_message.request_context_result.success.request_context.SetInParent()
        close = pb.AgentClientMessage()
        close.exec_client_control_message.stream_close.id = ex.id
        return [out.SerializeToString(), close.SerializeToString()]
    if case == "interaction_query":
        out.interaction_response.id = msg.interaction_query.id
        out.interaction_response.web_search_request_response.rejected.reason = "no"
        return [out.SerializeToString()]
    return []


def _headers(token: str, request_id: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {token}",
        "connect-protocol-version": "1",
        "x-request-id": request_id,
        "x-cursor-streaming": "true",
    }


async def floor_runsse(http: httpx.AsyncClient, url: str, token: str, text: str) -> tuple[float, float]:
    """One turn over RunSSE + BidiAppend with the bare minimum; returns (ttft, total)."""
    start = time.perf_counter()
    rid = str(uuid.uuid4())
    headers = _headers(token, rid)
    seq = 0
    pending: set[asyncio.Task[httpx.Response]] = set()

    def append(data: bytes) -> None:
        nonlocal seq
        body = ai.BidiAppendRequest(
            data=data.hex(), request_id=ai.BidiRequestId(request_id=rid), append_seqno=seq
        ).SerializeToString()
        seq += 1
        h = dict(headers, **{"content-type": "application/proto"})
        pending.add(
            asyncio.create_task(
                http.post(url + "/aiserver.v1.BidiService/BidiAppend", content=body, headers=h)
            )
        )

    append(_run_request(text))
    body = encode_envelope(ai.BidiRequestId(request_id=rid).SerializeToString())
    req = http.build_request(
        "POST",
        url + "/agent.v1.AgentService/RunSSE",
        content=body,
        headers=dict(headers, **{"content-type": "application/connect+proto"}),
    )
    response = await http.send(req, stream=True)
    ttft = 0.0
    blobs: dict[bytes, bytes] = {}
    decoder = EnvelopeDecoder()
    total = 0.0
    try:
        async for chunk in response.aiter_bytes():
            for frame in decoder.feed(chunk):
                if frame.end_stream is not None:
                    if not total:
                        raise RuntimeError("no turn_ended")
                    await asyncio.gather(*pending)
                    return ttft, total
                msg = pb.AgentServerMessage.FromString(frame.payload)
                if not ttft and msg.interaction_update.HasField("text_delta"):
                    ttft = time.perf_counter() - start
                if msg.interaction_update.HasField("turn_ended"):
                    # The caller has the turn's end here; the post-turn answers follow.
                    total = time.perf_counter() - start
                for data in _answers(msg, blobs):
                    append(data)
    finally:
        await response.aclose()
    raise RuntimeError("no end-stream")


class RawH2:
    """A bare h2c client: one connection, one stream per turn."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.authority = parts.hostname or "", parts.port or 80, parts.netloc
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024)
        self.writer.write(self.conn.data_to_send())

    async def turn(self, token: str, text: str) -> tuple[float, float]:
        start = time.perf_counter()
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", "/agent.v1.AgentService/Run"),
            ("content-type", "application/connect+proto"),
            *_headers(token, str(uuid.uuid4())).items(),
        ]
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, encode_envelope(_run_request(text)))
        self.writer.write(self.conn.data_to_send())
        decoder = EnvelopeDecoder()
        blobs: dict[bytes, bytes] = {}
        ttft = total = 0.0
        stream_ended = False
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise RuntimeError("connection closed")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    stream_ended = True
                if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                    for frame in decoder.feed(event.data):
                        if frame.end_stream is not None:
                            continue
                        msg = pb.AgentServerMessage.FromString(frame.payload)
                        if not ttft and msg.interaction_update.HasField("text_delta"):
                            ttft = time.perf_counter() - start
                        if msg.interaction_update.HasField("turn_ended"):
                            total = time.perf_counter() - start  # the caller has the turn's end
                        for answer in _answers(msg, blobs):
                            self.conn.send_data(sid, encode_envelope(answer))
            if stream_ended:
                # The request side stays open until the server's end-stream: the post-turn set_blob
                # needs its answer (live-dialect.md row 10).
                if not total:
                    raise RuntimeError("no turn_ended")
                self.conn.end_stream(sid)
                self.writer.write(self.conn.data_to_send())
                return ttft, total
            self.writer.write(self.conn.data_to_send())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# ----------------------------------------------------------------------------------------------
# the transport
# ----------------------------------------------------------------------------------------------
async def transport_turn(client: CursorClient, transport: ConnectTransport, text: str) -> tuple[float, float]:
    start = time.perf_counter()
    ttft = 0.0
    async for chunk in client.stream(MODEL, text):
        if chunk and not ttft:
            ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    idle = getattr(transport, "idle", None)  # the baseline finishes the post-turn work in-line
    if idle is not None:
        await idle()
    return ttft, total


LABELS = ("floor RunSSE+BidiAppend", "floor h2 Run", "connect RunSSE+BidiAppend", "connect h2 Run")


async def bench(rec: Recorder, url: str, turns: int) -> None:
    configs = [
        CursorPipeConfig(strategy="connect", backend_url=url, api_key=DEFAULT_API_KEY, use_http2=mode)
        for mode in ("never", "always")
    ]
    sse_transport, h2_transport = ConnectTransport(configs[0]), ConnectTransport(configs[1])
    async with (
        httpx.AsyncClient() as http,
        CursorClient(configs[0], transport=sse_transport) as sse_client,
        CursorClient(configs[1], transport=h2_transport) as h2_client,
    ):
        r = await http.post(
            url + "/auth/exchange_user_api_key",
            headers={"authorization": f"Bearer {DEFAULT_API_KEY}"},
            content=b"{}",
        )
        token = r.json()["accessToken"]
        raw = RawH2(url)
        await raw.connect()
        await sse_client.warmup()
        await h2_client.warmup()
        paths = (
            lambda i: floor_runsse(http, url, token, f"floor {i}"),
            lambda i: raw.turn(token, f"floor {i}"),
            lambda i: transport_turn(sse_client, sse_transport, f"turn {i}"),
            lambda i: transport_turn(h2_client, h2_transport, f"turn {i}"),
        )
        # Interleaved round robin, so load from other processes and warm-up drift hit every path
        # alike; the first two rounds are warm-up and discarded. Turns run one at a time, so the
        # process CPU time around a turn is that turn's (client and floor alike).
        for i in range(turns + 2):
            totals: dict[str, float] = {}
            for label, path in zip(LABELS, paths, strict=True):
                cpu = time.process_time()
                ttft, total = await path(i)
                cpu = time.process_time() - cpu
                if i >= 2:
                    totals[label] = total
                    rec.add(f"{label}: time to first token", ttft * 1000, "ms")
                    rec.add(f"{label}: turn total", total * 1000, "ms")
                    rec.add(f"{label}: client CPU per turn", cpu * 1000, "ms")
            if totals:
                for wire, floor, ours in (
                    ("h2 Run", "floor h2 Run", "connect h2 Run"),
                    ("RunSSE", "floor RunSSE+BidiAppend", "connect RunSSE+BidiAppend"),
                ):
                    rec.add(
                        f"overhead over the floor, {wire} (paired turns)",
                        (totals[ours] - totals[floor]) * 1000,
                        "ms",
                    )
        await raw.close()
    for wire, floor, ours in (
        ("h2 Run", "floor h2 Run", "connect h2 Run"),
        ("RunSSE", "floor RunSSE+BidiAppend", "connect RunSSE+BidiAppend"),
    ):
        rec.add_diff(
            f"overhead over the floor, {wire} (difference of medians)",
            f"{ours}: turn total",
            f"{floor}: turn total",
            "ms",
        )
        rec.add_diff(
            f"CPU over the floor per turn, {wire} (difference of medians)",
            f"{ours}: client CPU per turn",
            f"{floor}: client CPU per turn",
            "ms",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default_turns = 3 if quick() else 15
    parser.add_argument("--turns", type=int, default=int(os.environ.get("BENCH_TURNS", default_turns)))
    args = parser.parse_args(argv)
    rec = Recorder(
        "connect",
        f"Connect transport vs raw floor, emulator in a separate process, {args.turns} turns each "
        "(interleaved round robin after 2 warm-up rounds).",
    )
    with emulator_process() as url:
        asyncio.run(bench(rec, str(url), args.turns))
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
