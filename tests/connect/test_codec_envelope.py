"""Envelope framing: split feeding, gzip, caps, end-stream parsing, garbage -> ProtocolError only."""

from __future__ import annotations

import gzip
import json

import pytest
from cursorpipe._codecs.connect import (
    ConnectError,
    EnvelopeDecoder,
    encode_end_stream,
    encode_envelope,
    encode_error_details,
    parse_end_stream,
    parse_unary_error,
)
from cursorpipe._constants import MAX_FRAME_BYTES
from cursorpipe.errors import ProtocolError

PAYLOADS = [b"", b"\x3a\x00", b"hello world" * 50, bytes(range(256))]


def _stream(compress_every_other: bool = False) -> bytes:
    out = b""
    for i, p in enumerate(PAYLOADS):
        out += encode_envelope(p, flags=1 if compress_every_other and i % 2 else 0)
    return out + encode_end_stream()


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64, 10_000])
def test_any_split_gives_the_same_frames(step: int) -> None:
    wire = _stream(compress_every_other=True)
    dec = EnvelopeDecoder()
    frames = []
    for i in range(0, len(wire), step):
        frames += dec.feed(wire[i : i + step])
    dec.close()
    assert [f.payload for f in frames[:-1]] == PAYLOADS
    assert [f.compressed for f in frames[:-1]] == [False, True, False, True]
    assert frames[-1].is_end_stream and frames[-1].end_stream is not None
    assert frames[-1].end_stream.error is None
    assert dec.ended and dec.pending == 0


def test_feed_accepts_memoryview_and_bytearray() -> None:
    wire = encode_envelope(b"abc")
    assert EnvelopeDecoder().feed(memoryview(wire))[0].payload == b"abc"
    assert EnvelopeDecoder().feed(bytearray(wire))[0].payload == b"abc"


def test_gzip_frame_from_another_encoder() -> None:
    body = gzip.compress(b"\x0a\x02hi")  # non-zero mtime: any valid gzip member must decode
    wire = bytes([1]) + len(body).to_bytes(4, "big") + body
    (frame,) = EnvelopeDecoder().feed(wire)
    assert frame.flags == 1 and frame.payload == b"\x0a\x02hi"


def test_encode_gzip_is_deterministic() -> None:
    assert encode_envelope(b"x" * 1000, flags=1) == encode_envelope(b"x" * 1000, flags=1)
    assert len(encode_envelope(b"x" * 1000, flags=1)) < 100


def test_compressed_end_stream_flag_3() -> None:
    wire = encode_end_stream(ConnectError("internal", "boom"), compress=True)
    assert wire[0] == 3
    (frame,) = EnvelopeDecoder().feed(wire)
    assert frame.end_stream is not None and frame.end_stream.error == ConnectError("internal", "boom")


def test_end_stream_error_with_details_and_metadata() -> None:
    detail = encode_error_details(50, title="Slow down", detail="Too many requests", is_retryable=True)
    wire = encode_end_stream(ConnectError("resource_exhausted", "Error", (detail,)), {"Retry-After": ["3"]})
    payload = json.loads(wire[5:])
    assert payload["error"]["details"][0]["type"] == "aiserver.v1.ErrorDetails"
    assert "=" not in payload["error"]["details"][0]["value"]  # unpadded base64 (connect.md §8.2)
    (frame,) = EnvelopeDecoder().feed(wire)
    end = frame.end_stream
    assert end is not None and end.error is not None
    assert end.error.code == "resource_exhausted"
    assert end.error.details[0].value == detail.value
    assert end.metadata["retry-after"] == ("3",)


def test_frame_at_the_cap_is_accepted_and_over_the_cap_rejected() -> None:
    dec = EnvelopeDecoder(max_frame_bytes=10)
    assert dec.feed(encode_envelope(b"0123456789"))[0].payload == b"0123456789"
    with pytest.raises(ProtocolError, match="exceeds"):
        EnvelopeDecoder(max_frame_bytes=10).feed(b"\x00\x00\x00\x00\x0b")  # header alone is enough


def test_default_cap_is_the_policy_constant() -> None:
    header = b"\x00" + (MAX_FRAME_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(ProtocolError):
        EnvelopeDecoder().feed(header)


def test_gzip_bomb_is_capped() -> None:
    body = gzip.compress(b"\0" * 100_000)
    wire = bytes([1]) + len(body).to_bytes(4, "big") + body
    with pytest.raises(ProtocolError, match="limit"):
        EnvelopeDecoder(max_frame_bytes=50_000).feed(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"\x80\x00\x00\x00\x00",  # gRPC-Web trailer flag is not Connect
        b"\x04\x00\x00\x00\x00",
        b"\x01\x00\x00\x00\x03abc",  # not gzip
        b"\x02\x00\x00\x00\x03{x}",  # end-stream not JSON
        b"\x02\x00\x00\x00\x02[]",  # end-stream not an object
        b'\x02\x00\x00\x00\x0b{"error":1}',
        b'\x02\x00\x00\x00\x0c{"error":{}}',
        b'\x02\x00\x00\x00\x0e{"metadata":1}',
        b"\x02\x00\x00\x00\x02\xff\xfe",
        encode_end_stream() + b"\x00",  # data after end-stream
    ],
)
def test_malformed_input_raises_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        EnvelopeDecoder().feed(wire)


def test_bad_base64_detail_is_protocol_error() -> None:
    doc = {"error": {"code": "internal", "details": [{"type": "x", "value": "!!!"}]}}
    with pytest.raises(ProtocolError):
        parse_end_stream(json.dumps(doc).encode())


def test_data_after_end_in_a_later_feed() -> None:
    dec = EnvelopeDecoder()
    dec.feed(encode_end_stream())
    with pytest.raises(ProtocolError, match="after"):
        dec.feed(b"\x00")


def test_truncated_stream_is_reported_on_close() -> None:
    dec = EnvelopeDecoder()
    assert dec.feed(encode_envelope(b"abcdef")[:-2]) == []
    assert dec.pending == 9
    with pytest.raises(ProtocolError, match="inside a frame"):
        dec.close()


def test_non_bytes_input_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        EnvelopeDecoder().feed("text")  # type: ignore[arg-type]


def test_encode_rejects_bad_flags() -> None:
    with pytest.raises(ValueError):
        encode_envelope(b"", flags=0x80)


def test_unary_error_json_body() -> None:
    body = json.dumps({"code": "unauthenticated", "message": "Not logged in"}).encode()
    err = parse_unary_error(401, body, "application/json")
    assert err == ConnectError("unauthenticated", "Not logged in")


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "internal"), (401, "unauthenticated"), (403, "permission_denied"), (404, "unimplemented"),
     (429, "unavailable"), (502, "unavailable"), (503, "unavailable"), (504, "unavailable"),
     (418, "unknown")],
)  # fmt: skip
def test_unary_error_without_connect_body_infers_code_from_status(status: int, code: str) -> None:
    err = parse_unary_error(status, b"<html>bad gateway</html>", "text/html")
    assert err.code == code
    assert parse_unary_error(status, b"{not json", "application/json").code == code


def test_unary_error_flat_message_json() -> None:
    err = parse_unary_error(401, b'{"message":"stub says bad key"}', "application/json")
    assert err == ConnectError("unauthenticated", "stub says bad key")


def test_feed_partial_keeps_good_frames_read_together_with_a_bad_one() -> None:
    """One read holding two good frames and then a bad flag byte: ``feed`` raises (losing both),
    ``feed_partial`` hands back both and the error, so a caller can deliver them first."""
    good = encode_envelope(b"one") + encode_envelope(b"two")
    bad = b"\x04" + (3).to_bytes(4, "big") + b"bad"
    frames, error = EnvelopeDecoder().feed_partial(good + bad)
    assert [f.payload for f in frames] == [b"one", b"two"]
    assert isinstance(error, ProtocolError) and "0x04" in str(error)
    with pytest.raises(ProtocolError, match="0x04"):
        EnvelopeDecoder().feed(good + bad)
    frames, error = EnvelopeDecoder().feed_partial(good)
    assert len(frames) == 2 and error is None
