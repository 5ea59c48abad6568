"""Connect envelope codec throughput: frames decoded per second and MB/s (sans-IO, no sockets).

Three shapes of stream: many small text-delta frames (what a chat turn mostly is), large 64 KiB
frames, and gzip-compressed frames; each fed in 4 KiB network-sized chunks. Also the cost of
parsing the decoded protobuf messages (AgentServerMessage) for the small-frame case.
"""

from __future__ import annotations

import time

from _util import stats, table
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe.transports.connect._codec import EnvelopeDecoder, encode_envelope

REPEATS = 7


def _text_delta(i: int) -> bytes:
    msg = pb.AgentServerMessage()
    msg.interaction_update.text_delta.text = f"token {i} "
    return msg.SerializeToString()


def _stream(frames: list[bytes], flags: int = 0) -> bytes:
    return b"".join(encode_envelope(f, flags=flags) for f in frames)


def _chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _run(data: bytes, parse: bool = False) -> tuple[float, int]:
    chunks = _chunks(data)
    start = time.perf_counter()
    decoder = EnvelopeDecoder()
    n = 0
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            n += 1
            if parse:
                pb.AgentServerMessage.FromString(frame.payload)
    return time.perf_counter() - start, n


def main() -> None:
    small = [_text_delta(i) for i in range(50_000)]
    big = [bytes(range(256)) * 256 for _ in range(400)]  # 64 KiB each
    cases = [
        ("50k small text deltas", _stream(small), False),
        ("50k small text deltas + protobuf parse", _stream(small), True),
        ("400 x 64 KiB frames", _stream(big), False),
        ("400 x 64 KiB gzip frames", _stream(big, flags=1), False),
    ]
    rows = []
    for name, data, parse in cases:
        _run(data, parse)  # warm-up
        times, frames = [], 0
        for _ in range(REPEATS):
            took, frames = _run(data, parse)
            times.append(took)
        lo, med, hi = stats(times)
        rows.append(
            [
                name,
                f"{len(data) / 1e6:.2f}",
                f"{frames / hi:,.0f} / {frames / med:,.0f} / {frames / lo:,.0f}",
                f"{len(data) / hi / 1e6:.1f} / {len(data) / med / 1e6:.1f} / {len(data) / lo / 1e6:.1f}",
            ]
        )
    print(f"Connect envelope decoding, fed in 4 KiB chunks; {REPEATS} runs each (min / median / max).\n")
    print(table(["stream", "wire MB", "frames/s", "MB/s (wire)"], rows))


if __name__ == "__main__":
    main()
