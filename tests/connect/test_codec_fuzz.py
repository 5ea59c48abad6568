"""Property tests: arbitrary bytes in arbitrary splits never raise anything but ProtocolError, and
valid streams decode identically however they are split."""

from __future__ import annotations

import contextlib

from cursorpipe._codecs.connect import (
    EnvelopeDecoder,
    encode_end_stream,
    encode_envelope,
    parse_end_stream,
    parse_unary_error,
)
from cursorpipe.errors import ProtocolError
from hypothesis import given, settings
from hypothesis import strategies as st


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_garbage_only_ever_raises_protocol_error(data: bytes, cuts: list[int]) -> None:
    dec = EnvelopeDecoder(max_frame_bytes=4096)
    with contextlib.suppress(ProtocolError):
        for chunk in _splits(data, cuts):
            dec.feed(chunk)
        dec.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_end_stream_and_unary_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_end_stream(data)
    assert parse_unary_error(500, data, "application/json").code  # never raises


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=120), st.booleans()), max_size=6),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_valid_streams_decode_the_same_under_any_split(
    frames: list[tuple[bytes, bool]], cuts: list[int]
) -> None:
    wire = b"".join(encode_envelope(p, flags=1 if z else 0) for p, z in frames) + encode_end_stream()
    dec = EnvelopeDecoder()
    got = []
    for chunk in _splits(wire, cuts):
        got += dec.feed(chunk)
    dec.close()
    assert [f.payload for f in got[:-1]] == [p for p, _ in frames]
    assert got[-1].is_end_stream
