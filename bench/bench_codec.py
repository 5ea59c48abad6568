"""Connect envelope codec throughput: frames decoded per second and MB/s (sans-IO, no sockets).

Three shapes of stream: many small text-delta frames (what a chat turn mostly is), large 64 KiB
frames, and gzip-compressed frames; each fed in 4 KiB network-sized chunks. Also the cost of
parsing the decoded protobuf messages (AgentServerMessage) for the small-frame case.
"""

from __future__ import annotations

import time

from _util import Recorder, import_first, quick
from cursorpipe._proto.agent.v1 import agent_pb2 as pb

# The codec may move into a shared private package (issue 13); measure whichever this checkout has.
_codec = import_first("cursorpipe.transports.connect._codec", "cursorpipe._codecs.connect")
EnvelopeDecoder, encode_envelope = _codec.EnvelopeDecoder, _codec.encode_envelope

REPEATS = 1 if quick() else 5
SMALL = 2_000 if quick() else 50_000


def _text_delta(i: int) -> bytes:
    msg = pb.AgentServerMessage()
    msg.interaction_update.text_delta.text = f"token {i} "
    return msg.SerializeToString()


def _stream(frames: list[bytes], flags: int = 0) -> bytes:
    return b"".join(encode_envelope(f, flags=flags) for f in frames)


def _chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _run(data: bytes, parse: bool = False) -> tuple[float, float, int]:
    chunks = _chunks(data)
    cpu = time.process_time()
    start = time.perf_counter()
    decoder = EnvelopeDecoder()
    n = 0
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            n += 1
            if parse:
                pb.AgentServerMessage.FromString(frame.payload)
    return time.perf_counter() - start, time.process_time() - cpu, n


def main() -> None:
    rec = Recorder(
        "codec", "Connect envelope decoding (sans-IO, no sockets), fed in 4 KiB chunks; one sample per run."
    )
    small = [_text_delta(i) for i in range(SMALL)]
    big = [bytes(range(256)) * 256 for _ in range(40 if quick() else 400)]  # 64 KiB each
    n_small, n_big = f"{SMALL // 1000}k", len(big)
    cases = [
        (f"{n_small} small text deltas", _stream(small), False),
        (f"{n_small} small text deltas + protobuf parse", _stream(small), True),
        (f"{n_big} x 64 KiB frames", _stream(big), False),
        (f"{n_big} x 64 KiB gzip frames", _stream(big, flags=1), False),
    ]
    for name, data, parse in cases:
        _run(data, parse)  # warm-up
        for _ in range(REPEATS):
            wall, cpu, frames = _run(data, parse)
            rec.add(f"{name}: frames/s", frames / wall, "frames/s", better="higher")
            rec.add(f"{name}: wire MB/s", len(data) / wall / 1e6, "MB/s", better="higher")
            rec.add(f"{name}: CPU per frame", cpu * 1e6 / frames, "µs")
    rec.finish()


if __name__ == "__main__":
    main()
