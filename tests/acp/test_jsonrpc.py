"""The sans-IO JSON-RPC line codec: golden lines, Cursor's quirks, and arbitrary bytes."""

from __future__ import annotations

import json

import pytest
from cursorpipe._codecs import jsonrpc
from cursorpipe._codecs.jsonrpc import (
    ErrorResponse,
    MessageDecoder,
    Notification,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
    parse_line,
)
from cursorpipe.errors import ProtocolError
from hypothesis import given, settings
from hypothesis import strategies as st

# acp.md §2/§4: lines as Cursor writes them.
INIT_RESULT = (
    b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},'
    b'"authMethods":[{"id":"cursor_login","name":"Cursor Login"}]}}\n'
)
PERMISSION = (
    b'{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"s1",'
    b'"toolCall":{"toolCallId":"call-1-0\\nfc_ab_0","kind":"execute"},"options":[{"optionId":"allow-once",'
    b'"kind":"allow_once"},{"optionId":"reject-once","kind":"reject_once"}]}}\n'
)
UPDATE = (
    b'{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":'
    b'{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Hi"}}}}\n'
)
AUTH_ERROR = (
    b'{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"Authentication required","data":'
    b'{"message":"Authentication required. Please run \'agent login\' first"}}}\n'
)
ZOD_ERROR = (
    b'{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"Internal error","data":'
    b'[{"code":"invalid_type","path":["cwd"],"message":"Required"}]}}\n'
)


@pytest.fixture(autouse=True, params=["orjson", "json"])
def decoder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with orjson (when installed) and with the standard library alone."""
    if request.param == "json":
        monkeypatch.setattr(jsonrpc, "_fast_loads", None)
    elif jsonrpc._fast_loads is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Valid for Python's json, refused by orjson: the result must not depend on which is used.
        (b'{"jsonrpc":"2.0","id":1,"result":{"x":NaN}}', "nan"),
        (b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"result":{"x":1}}', 1),
        (b'{"jsonrpc":"2.0","id":1,"result":{"x":"\\ud800"}}', "\ud800"),
    ],
)
def test_lines_orjson_refuses_decode_as_json_does(line: bytes, expected: object) -> None:
    msg = parse_line(line)
    assert isinstance(msg, Response) and msg.id == 1
    value = msg.result["x"]
    if expected == "nan":
        assert value != value  # NaN
    else:
        assert value == expected
        assert MessageDecoder().feed(line + b"\r\n") == [msg]


def test_integers_beyond_64_bits_stay_exact_integers() -> None:
    # orjson reads such an integer as a float: lines with one go to json.
    big = 2**64 + 1
    payload = parse_line(b'{"jsonrpc":"2.0","id":1,"result":{"x":%d,"y":-%d}}' % (big, 2**63 + 1))
    assert isinstance(payload, Response) and payload.result == {"x": big, "y": -(2**63 + 1)}
    msg = parse_line(b'{"jsonrpc":"2.0","id":%d,"method":"cursor/x"}' % big)
    assert isinstance(msg, Request) and msg.id == big and isinstance(msg.id, int)
    answer = parse_line(b'{"jsonrpc":"2.0","id":%d,"result":{}}' % -big)
    assert isinstance(answer, Response) and answer.id == -big


def test_golden_lines_decode_to_typed_messages() -> None:
    dec = MessageDecoder()
    out = dec.feed(INIT_RESULT + PERMISSION + UPDATE + AUTH_ERROR + ZOD_ERROR)
    assert [type(m) for m in out] == [Response, Request, Notification, ErrorResponse, ErrorResponse]
    init, perm, upd, auth, zod = out
    assert isinstance(init, Response) and init.id == 1
    assert init.result["authMethods"][0]["id"] == "cursor_login"
    assert isinstance(perm, Request) and perm.id == 0 and perm.method == "session/request_permission"
    # The newline inside toolCallId survives (acp.md §4).
    assert perm.params["toolCall"]["toolCallId"] == "call-1-0\nfc_ab_0"
    assert isinstance(upd, Notification) and upd.params["update"]["content"]["text"] == "Hi"
    assert isinstance(auth, ErrorResponse) and auth.error.code == -32000
    assert "agent login" in auth.error.text
    assert isinstance(zod, ErrorResponse) and zod.error.text == "Internal error: Required"
    assert dec.buffered == 0


def test_rpc_error_text_reads_every_data_shape() -> None:
    assert RpcError(-32603, "Internal error", {"details": "Invalid mode ID: x"}).text == (
        "Internal error: Invalid mode ID: x"
    )
    assert RpcError(-32602, "Invalid params", "raw").text == "Invalid params: raw"
    assert RpcError(-32601, "Method not found").text == "Method not found"


def test_split_feeding_and_crlf_and_blank_lines() -> None:
    data = b"\n\r\n" + UPDATE.replace(b"\n", b"\r\n") + INIT_RESULT
    dec = MessageDecoder()
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert [type(m) for m in out] == [Notification, Response]


def test_noise_costs_only_its_own_line() -> None:
    dec = MessageDecoder()
    out = dec.feed(b"\xe2\x9a\xa0 Warning: The provided API key is inv\n" + UPDATE + b"[1,2]\n" + INIT_RESULT)
    assert isinstance(out[0], ProtocolError)
    assert isinstance(out[1], Notification)
    assert isinstance(out[2], ProtocolError) and "batches" in str(out[2])
    assert isinstance(out[3], Response)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b'"a string"', "not a JSON object"),
        (b'{"jsonrpc":"1.0","id":1,"result":{}}', "jsonrpc"),
        (b'{"jsonrpc":"2.0","id":true,"result":{}}', "id must"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', "id must"),
        (b'{"jsonrpc":"2.0","method":""}', "method"),
        (b'{"jsonrpc":"2.0","method":"x","params":3}', "params"),
        (b'{"jsonrpc":"2.0","id":1}', "result or error"),
        (b'{"jsonrpc":"2.0","id":1,"error":"boom"}', "error must"),
        (b'{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}', "error.code"),
        (b'{"jsonrpc":"2.0"}', "neither"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_lines_raise_protocol_error(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_line(line)


def test_missing_jsonrpc_is_tolerated_and_null_error_id_kept() -> None:
    msg = parse_line(b'{"id":7,"result":null}')
    assert msg == Response(7, None)
    err = parse_line(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}')
    assert isinstance(err, ErrorResponse) and err.id is None


def test_overlong_line_is_reported_once_and_skipped() -> None:
    dec = MessageDecoder(max_line_bytes=64)
    out = dec.feed(b"{" + b"x" * 100)
    assert len(out) == 1 and isinstance(out[0], ProtocolError)
    assert dec.buffered == 0
    out = dec.feed(b"y" * 100)
    assert out == []
    out = dec.feed(b"zz\n" + UPDATE[:60] + b"\n")
    assert len(out) == 1 and isinstance(out[0], ProtocolError)  # the short junk line is malformed
    assert dec.feed(b'{"id":1,"result":1}\n') == [Response(1, 1)]


def test_close_parses_a_final_line_without_newline() -> None:
    dec = MessageDecoder()
    assert dec.feed(INIT_RESULT.rstrip(b"\n")) == []
    out = dec.close()
    assert len(out) == 1 and isinstance(out[0], Response)


def test_encoders_roundtrip_and_escape_newlines() -> None:
    req = encode_request(
        5, "session/prompt", {"sessionId": "s", "prompt": [{"type": "text", "text": "a\nb"}]}
    )
    assert req.endswith(b"\n") and req.count(b"\n") == 1
    assert parse_line(req) == Request(
        5, "session/prompt", {"sessionId": "s", "prompt": [{"type": "text", "text": "a\nb"}]}
    )
    assert parse_line(encode_notification("session/cancel", {"sessionId": "s"})) == Notification(
        "session/cancel", {"sessionId": "s"}
    )
    assert parse_line(encode_result(0, {"outcome": {"outcome": "cancelled"}})) == Response(
        0, {"outcome": {"outcome": "cancelled"}}
    )
    err = parse_line(encode_error(3, -32601, "Method not found", {"method": "cursor/create_plan"}))
    assert isinstance(err, ErrorResponse) and err.error == RpcError(
        -32601, "Method not found", {"method": "cursor/create_plan"}
    )
    assert json.loads(encode_request(1, "x"))["method"] == "x"


def test_unencodable_values_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        encode_result(1, float("nan"))
    with pytest.raises(ProtocolError):
        encode_result(1, object())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_arbitrary_bytes_any_split_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    whole = MessageDecoder(max_line_bytes=128)
    expected = whole.feed(data) + whole.close()
    pieces = sorted({min(c, len(data)) for c in cuts})
    dec = MessageDecoder(max_line_bytes=128)
    got: list[object] = []
    start = 0
    for cut in [*pieces, len(data)]:
        got += dec.feed(data[start:cut])
        start = cut
    got += dec.close()
    for item in got:
        assert isinstance(item, (Request, Notification, Response, ErrorResponse, ProtocolError))
    # Splitting never changes which messages come out.
    assert [m for m in got if not isinstance(m, ProtocolError)] == [
        m for m in expected if not isinstance(m, ProtocolError)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6) | st.text(max_size=10), st.text(min_size=1, max_size=20), json_values
        ),
        max_size=6,
    ),
    st.integers(1, 50),
)
def test_encoded_messages_survive_any_chunking(msgs: list[tuple[int | str, str, object]], step: int) -> None:
    data = b"".join(encode_request(i, m, {"v": v}) for i, m, v in msgs)
    dec = MessageDecoder()
    out: list[object] = []
    for k in range(0, len(data), step):
        out += dec.feed(data[k : k + step])
    assert out == [Request(i, m, {"v": v}) for i, m, v in msgs]


def test_a_long_line_in_many_chunks_is_decoded_once_complete() -> None:
    text = "x" * 300_000
    line = encode_request(1, "session/update", {"t": text})
    dec = MessageDecoder()
    out: list[object] = []
    for k in range(0, len(line), 4096):
        out += dec.feed(line[k : k + 4096])
    assert out == [Request(1, "session/update", {"t": text})]
    assert dec.buffered == 0
