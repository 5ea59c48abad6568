"""Sans-IO Connect protocol codec: envelopes, end-stream frames, unary errors, Cursor's ErrorDetails.

No sockets here, only bytes in and values out, so every transport (h2 ``Run``, httpx RunSSE +
BidiAppend) and the emulator share one implementation, and golden-byte tests cover it.

Envelope (connect.md §3.1): ``[flags:1][length:4 big-endian][payload:length]``. Flags: ``0x00`` plain
message, ``0x01`` payload gzip-compressed, ``0x02`` end-stream (payload is JSON, always the last
frame), ``0x03`` compressed end-stream. ``0x80`` (the gRPC-Web trailer) and any other bit are not
Connect and are rejected. Malformed input of any kind raises :class:`~cursorpipe.errors.ProtocolError`
and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from .._constants import MAX_FRAME_BYTES
from .._proto.aiserver.v1 import aiserver_pb2
from ..errors import ProtocolError

__all__ = [
    "CODE_TO_HTTP_STATUS",
    "ERROR_DETAILS_TYPE",
    "FLAG_COMPRESSED",
    "FLAG_END_STREAM",
    "HTTP_STATUS_TO_CODE",
    "ConnectError",
    "ConnectErrorDetail",
    "EndStream",
    "EnvelopeDecoder",
    "ErrorDetailsInfo",
    "Frame",
    "decode_error_details",
    "decode_unary_body",
    "encode_end_stream",
    "encode_envelope",
    "encode_error_details",
    "error_to_json",
    "parse_end_stream",
    "parse_unary_error",
]

FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_END_STREAM
_HEADER = 5

#: The ``type`` of Cursor's error detail in Connect JSON (connect.md §8.2).
ERROR_DETAILS_TYPE = "aiserver.v1.ErrorDetails"

#: Connect code -> HTTP status for unary errors (connect.md §8.1, the Connect spec).
CODE_TO_HTTP_STATUS: dict[str, int] = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}
#: HTTP status -> Connect code when a unary error carries no Connect JSON body (connect.md §8.1).
HTTP_STATUS_TO_CODE: dict[int, str] = {
    400: "internal",
    401: "unauthenticated",
    403: "permission_denied",
    404: "unimplemented",
    429: "unavailable",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


@dataclass(frozen=True)
class ConnectErrorDetail:
    """One entry of a Connect error's ``details``: protobuf ``type`` name and decoded ``value`` bytes."""

    type: str
    value: bytes
    debug: Any = None


@dataclass(frozen=True)
class ConnectError:
    """A Connect error: ``code`` (snake_case Connect code), ``message`` and ``details``.

    ``http_status`` is set only when the code was *inferred* from a bare HTTP status because the
    response carried no Connect error body (a proxy, an edge rate limiter): the mapping needs it to
    tell an HTTP 429 (rate limited) from a real ``unavailable`` (live-dialect.md row 18)."""

    code: str
    message: str = ""
    details: tuple[ConnectErrorDetail, ...] = ()
    http_status: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EndStream:
    """A parsed end-stream frame: ``error`` (``None`` on success) and trailing ``metadata``."""

    error: ConnectError | None = None
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class Frame(NamedTuple):
    """One decoded envelope. ``payload`` is already decompressed; ``flags`` are as received.

    For end-stream frames (``flags & 0x02``) ``end_stream`` holds the parsed JSON. A named tuple,
    not a frozen dataclass: one is built per message, and a frozen dataclass's ``__init__`` costs
    several times as much (issue 16, ``bench_codec.py``).
    """

    flags: int
    payload: bytes
    end_stream: EndStream | None = None

    @property
    def is_end_stream(self) -> bool:
        """True for the final end-stream frame."""
        return bool(self.flags & FLAG_END_STREAM)

    @property
    def compressed(self) -> bool:
        """True when the payload arrived gzip-compressed."""
        return bool(self.flags & FLAG_COMPRESSED)


@dataclass(frozen=True)
class ErrorDetailsInfo:
    """Cursor's ``aiserver.v1.ErrorDetails`` decoded (connect.md §8.2).

    ``name`` is the enum name without the ``ERROR_`` prefix (``"PRO_USER_USAGE_LIMIT"``), or
    ``"UNKNOWN_<n>"`` for values newer than our schema.
    """

    error: int
    name: str
    title: str = ""
    detail: str = ""
    is_retryable: bool | None = None
    is_expected: bool | None = None
    action_required: str | None = None
    additional_info: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """``title + " " + detail`` as the SDK builds its message, or ``""``."""
        return " ".join(p for p in (self.title.strip(), self.detail.strip()) if p)


def _gzip(data: bytes) -> bytes:
    # mtime=0 keeps the output deterministic (golden bytes, cassettes).
    return gzip.compress(data, compresslevel=6, mtime=0)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing more than ``limit`` bytes of output (zip bombs)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"Corrupt gzip payload in a Connect frame: {exc}") from exc
    if len(out) > limit:
        raise ProtocolError(f"A decompressed Connect frame exceeds the {limit}-byte limit")
    if not d.eof:
        raise ProtocolError("Truncated gzip payload in a Connect frame")
    if d.unused_data:
        raise ProtocolError("Trailing bytes after the gzip payload of a Connect frame")
    return out


def encode_envelope(payload: bytes, *, flags: int = 0) -> bytes:
    """Wrap ``payload`` in a Connect envelope.

    With ``flags & 0x01`` the payload (given uncompressed) is gzip-compressed here. Raises
    :class:`ValueError` for unknown flag bits or an oversized payload (a programming error, not
    peer input).
    """
    if flags & ~_KNOWN_FLAGS or flags < 0:
        raise ValueError(f"unsupported Connect envelope flags {flags:#x}")
    body = _gzip(payload) if flags & FLAG_COMPRESSED else payload
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"Connect frame of {len(body)} bytes exceeds MAX_FRAME_BYTES")
    return bytes([flags]) + len(body).to_bytes(4, "big") + body


def error_to_json(error: ConnectError) -> dict[str, Any]:
    """The Connect JSON form of ``error`` (details base64 without padding, connect.md §8.2)."""
    out: dict[str, Any] = {"code": error.code}
    if error.message:
        out["message"] = error.message
    if error.details:
        items = []
        for d in error.details:
            item: dict[str, Any] = {
                "type": d.type,
                "value": base64.b64encode(d.value).decode("ascii").rstrip("="),
            }
            if d.debug is not None:
                item["debug"] = d.debug
            items.append(item)
        out["details"] = items
    return out


def encode_end_stream(
    error: ConnectError | None = None,
    metadata: Mapping[str, Sequence[str]] | None = None,
    *,
    compress: bool = False,
) -> bytes:
    """An end-stream envelope: ``{}`` on success, ``{"error": ...}`` otherwise (connect.md §8.1)."""
    doc: dict[str, Any] = {}
    if error is not None:
        doc["error"] = error_to_json(error)
    if metadata:
        doc["metadata"] = {k: list(v) for k, v in metadata.items()}
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return encode_envelope(payload, flags=FLAG_END_STREAM | (FLAG_COMPRESSED if compress else 0))


def _b64decode(value: str) -> bytes:
    # Connect sends standard base64 without padding; accept padding and the URL-safe alphabet too.
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("Invalid base64 in a Connect error detail") from exc


def _parse_error(obj: Any) -> ConnectError:
    if not isinstance(obj, dict):
        raise ProtocolError("Connect error is not a JSON object")
    code = obj.get("code")
    if not isinstance(code, str) or not code:
        raise ProtocolError("Connect error has no string 'code'")
    message = obj.get("message", "")
    if message is None:
        message = ""
    if not isinstance(message, str):
        raise ProtocolError("Connect error 'message' is not a string")
    raw_details = obj.get("details", [])
    if raw_details is None:
        raw_details = []
    if not isinstance(raw_details, list):
        raise ProtocolError("Connect error 'details' is not a list")
    details: list[ConnectErrorDetail] = []
    for item in raw_details:
        if not isinstance(item, dict):
            raise ProtocolError("Connect error detail is not a JSON object")
        typ, value = item.get("type", ""), item.get("value", "")
        if not isinstance(typ, str) or not isinstance(value, str):
            raise ProtocolError("Connect error detail 'type'/'value' are not strings")
        details.append(ConnectErrorDetail(typ, _b64decode(value), item.get("debug")))
    return ConnectError(code, message, tuple(details))


def _parse_metadata(obj: Any) -> dict[str, tuple[str, ...]]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ProtocolError("Connect end-stream 'metadata' is not a JSON object")
    out: dict[str, tuple[str, ...]] = {}
    for key, values in obj.items():
        if isinstance(values, str):  # lenient: a bare string where the spec says a list
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ProtocolError("Connect end-stream metadata values must be lists of strings")
        out[str(key).lower()] = tuple(values)
    return out


def parse_end_stream(payload: bytes) -> EndStream:
    """Parse the JSON payload of an end-stream frame (already decompressed)."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("Connect end-stream frame is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("Connect end-stream frame is not a JSON object")
    error = doc.get("error")
    return EndStream(
        error=None if error is None else _parse_error(error),
        metadata=_parse_metadata(doc.get("metadata")),
    )


def parse_unary_error(status: int, body: bytes, content_type: str = "") -> ConnectError:
    """The Connect error of a failed unary call (non-200 status), connect.md §8.1.

    A JSON body ``{"code", "message", "details"}`` wins; otherwise (a proxy page, an empty body) the
    code is inferred from the HTTP status. Never raises: a peer that sends garbage still gets a
    Connect code from its status.
    """
    if "json" in content_type.lower() or body[:1] == b"{":
        try:
            doc = json.loads(body.decode("utf-8"))
            if isinstance(doc, dict) and isinstance(doc.get("code"), str):
                return _parse_error(doc)
            if isinstance(doc, dict) and isinstance(doc.get("message"), str):
                code = HTTP_STATUS_TO_CODE.get(status, "unknown")
                return ConnectError(code, doc["message"], http_status=status)
        except (UnicodeDecodeError, ValueError, RecursionError, ProtocolError):
            pass
    return ConnectError(HTTP_STATUS_TO_CODE.get(status, "unknown"), f"HTTP {status}", http_status=status)


def decode_error_details(details: Sequence[ConnectErrorDetail]) -> ErrorDetailsInfo | None:
    """Decode the first ``aiserver.v1.ErrorDetails`` detail (connect.md §8.2), or ``None`` if absent.

    Raises :class:`ProtocolError` when the detail is present but is not valid protobuf.
    """
    for d in details:
        typ = d.type.rsplit("/", 1)[-1]  # tolerate "type.googleapis.com/aiserver.v1.ErrorDetails"
        if typ != ERROR_DETAILS_TYPE:
            continue
        msg = aiserver_pb2.ErrorDetails()
        try:
            msg.ParseFromString(d.value)
        except (DecodeError, RecursionError) as exc:
            raise ProtocolError("Cursor's ErrorDetails detail is not valid protobuf") from exc
        try:
            name = aiserver_pb2.ErrorDetails.Error.Name(msg.error).removeprefix("ERROR_")
        except ValueError:
            name = f"UNKNOWN_{msg.error}"
        cd = msg.details
        return ErrorDetailsInfo(
            error=int(msg.error),
            name=name,
            title=cd.title,
            detail=cd.detail,
            is_retryable=cd.is_retryable if cd.HasField("is_retryable") else None,
            is_expected=msg.is_expected if msg.HasField("is_expected") else None,
            action_required=(
                cd.analytics_metadata.action_required
                if cd.HasField("analytics_metadata") and cd.analytics_metadata.HasField("action_required")
                else None
            ),
            additional_info=dict(cd.additional_info),
        )
    return None


def encode_error_details(
    error: int,
    *,
    title: str = "",
    detail: str = "",
    is_retryable: bool | None = None,
    is_expected: bool | None = None,
) -> ConnectErrorDetail:
    """Build an ``aiserver.v1.ErrorDetails`` detail (used by the emulator and by tests)."""
    msg = aiserver_pb2.ErrorDetails(error=aiserver_pb2.ErrorDetails.Error.ValueType(error))
    msg.details.title = title
    msg.details.detail = detail
    if is_retryable is not None:
        msg.details.is_retryable = is_retryable
    if is_expected is not None:
        msg.is_expected = is_expected
    debug: dict[str, Any] = {
        "error": aiserver_pb2.ErrorDetails.Error.Name(msg.error)
        if msg.error in aiserver_pb2.ErrorDetails.Error.values()
        else error,
        "details": {"title": title, "detail": detail},
    }
    if is_retryable is not None:
        debug["details"]["isRetryable"] = is_retryable
    if is_expected is not None:
        debug["isExpected"] = is_expected
    return ConnectErrorDetail(ERROR_DETAILS_TYPE, msg.SerializeToString(), debug)


def decode_unary_body(body: bytes, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The protobuf bytes of a unary ``application/proto`` response, raw or enveloped.

    connect.md §3.2 says unary answers are bare messages; live-dialect.md row 23 (confidence B)
    says the live service may wrap them in one Connect envelope, optionally gzip'd or followed by
    an end-stream frame. The two cannot be confused: a protobuf message never starts with byte
    0x00..0x03 (that would be field number 0), so such a first byte plus a length that fits the
    body exactly means an envelope. An end-stream frame that carries an error raises it as
    :class:`ProtocolError`, naming the code."""
    if len(body) < _HEADER or body[0] & ~_KNOWN_FLAGS:
        return body
    length = int.from_bytes(body[1:_HEADER], "big")
    if _HEADER + length > len(body):
        return body
    decoder = EnvelopeDecoder(max_frame_bytes=max_frame_bytes)
    frames = decoder.feed(body)
    decoder.close()
    messages = [f for f in frames if not f.is_end_stream]
    for frame in frames:
        if frame.end_stream is not None and frame.end_stream.error is not None:
            err = frame.end_stream.error
            raise ProtocolError(f"The unary response ended with Connect error {err.code}: {err.message}")
    if len(messages) != 1:
        raise ProtocolError(f"An enveloped unary response carried {len(messages)} messages instead of one")
    return messages[0].payload


class EnvelopeDecoder:
    """Incremental envelope decoder: feed any byte splits, get whole frames back.

    ``feed`` returns the frames completed by the new bytes (possibly none). The end-stream frame is
    parsed into :class:`EndStream` (``frame.end_stream``); any byte after it is a protocol error.
    Call :meth:`close` at end of input: leftover bytes (a truncated frame) are a protocol error.
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the end-stream frame has been decoded."""
        return self._ended

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; return every frame they complete."""
        frames, error = self.feed_partial(data)
        if error is not None:
            raise error
        return frames

    def feed_partial(self, data: bytes | bytearray | memoryview) -> tuple[list[Frame], ProtocolError | None]:
        """Like :meth:`feed`, but a protocol error comes back with the good frames decoded before
        it (a bad frame in the same read as good ones must not lose what came first)."""
        frames: list[Frame] = []
        try:
            self._feed_into(data, frames)
        except ProtocolError as exc:
            return frames, exc
        return frames, None

    def _feed_into(self, data: bytes | bytearray | memoryview, frames: list[Frame]) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ProtocolError(f"Connect decoder expects bytes, got {type(data).__name__}")
        if not data:
            return
        if self._ended:
            raise ProtocolError("Data after the Connect end-stream frame")
        buf = self._buf
        buf += data
        # Frames are read at an offset and the consumed bytes dropped once per feed: deleting
        # each frame's bytes from the front would move the rest of the buffer every time.
        pos, size = 0, len(buf)
        try:
            while size - pos >= _HEADER:
                flags = buf[pos]
                length = int.from_bytes(buf[pos + 1 : pos + _HEADER], "big")
                if flags & ~_KNOWN_FLAGS:
                    raise ProtocolError(f"Unknown Connect envelope flags {flags:#04x}")
                if length > self._max:
                    raise ProtocolError(f"Connect frame of {length} bytes exceeds the {self._max}-byte limit")
                end = pos + _HEADER + length
                if size < end:
                    break
                payload = bytes(buf[pos + _HEADER : end])
                pos = end
                if flags & FLAG_COMPRESSED:
                    payload = _gunzip(payload, self._max)
                if flags & FLAG_END_STREAM:
                    frames.append(Frame(flags, payload, parse_end_stream(payload)))
                    self._ended = True
                    if size > pos:
                        raise ProtocolError("Data after the Connect end-stream frame")
                    break
                frames.append(Frame(flags, payload))
        finally:
            del buf[:pos]

    def close(self) -> None:
        """Signal end of input; raise :class:`ProtocolError` if a partial frame is left."""
        if self._buf:
            raise ProtocolError(f"Connect stream ended inside a frame ({len(self._buf)} bytes left over)")
