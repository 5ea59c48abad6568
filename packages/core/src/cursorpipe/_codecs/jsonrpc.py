"""Sans-IO JSON-RPC 2.0 line codec for ``agent acp`` (design.md lesson 2).

Bytes in, messages out; no asyncio, no pipes. The ACP wire is one JSON object per
``\\n``-terminated line (acp.md §2). Parsing is lenient where Cursor is known to be loose and strict
about the shape we rely on:

* blank lines and a trailing ``\\r`` are ignored;
* ``"jsonrpc"`` may be missing, but if present it must be ``"2.0"``;
* ``error.data`` is kept as-is because Cursor sends it in three shapes (acp.md §5);
* ids may be integers or strings (Cursor numbers its own requests from 0, acp.md §4).

A malformed line never raises out of :meth:`MessageDecoder.feed`: it comes back as a
:class:`~cursorpipe.errors.ProtocolError` *item* in the returned list, so one line of noise (the CLI
can print warnings, acp.md §5 "Invalid API key warning") does not lose the messages around it. The
caller decides whether to log and continue (the acp transport does) or to fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import ProtocolError

_fast_loads: Callable[[bytes], Any] | None
try:  # installed with the server extra; the standard library decides whenever it refuses a line
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    _fast_loads = None

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ErrorResponse",
    "Message",
    "MessageDecoder",
    "Notification",
    "Request",
    "Response",
    "RpcError",
    "encode",
    "encode_error",
    "encode_notification",
    "encode_request",
    "encode_result",
    "parse_line",
]

#: acp.md §8 recommends a 1–8 MiB line limit; the upper end leaves room for large tool outputs.
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024

RequestId: TypeAlias = int | str

# JSON-RPC 2.0 codes (acp.md §5).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
AUTH_REQUIRED = -32000


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error object. ``data`` is polymorphic in Cursor: ``{message}``, ``{details}`` or a
    Zod issue array (acp.md §5)."""

    code: int
    message: str
    data: Any = None

    @property
    def text(self) -> str:
        """``message`` plus any human text found in ``data`` (for classification and messages)."""
        parts = [self.message]
        data = self.data
        if isinstance(data, dict):
            for key in ("message", "details", "error"):
                value = data.get(key)
                if isinstance(value, str) and value and value not in parts:
                    parts.append(value)
        elif isinstance(data, str) and data:
            parts.append(data)
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict) and isinstance(item.get("message"), str):
                    parts.append(item["message"])
        return ": ".join(parts)


@dataclass(frozen=True, slots=True)
class Request:
    """A call that expects an answer (``id`` present)."""

    id: RequestId
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notification:
    """A call without ``id``; never answered."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """A successful answer to the request with the same ``id``."""

    id: RequestId
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error answer. ``id`` is ``None`` when the peer could not read the request's id."""

    id: RequestId | None
    error: RpcError


Message: TypeAlias = Request | Notification | Response | ErrorResponse


def _bad(reason: str, line: bytes) -> ProtocolError:
    # Only a short prefix: lines can be huge and could, in principle, echo a prompt.
    preview = line[:80].decode("utf-8", "replace")
    return ProtocolError(f"agent acp sent a malformed JSON-RPC line ({reason}): {preview!r}")


def _valid_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _params(obj: dict[str, Any], line: bytes) -> dict[str, Any]:
    params = obj.get("params")
    if params is None:
        return {}
    if isinstance(params, dict):
        return params
    # ACP only ever uses by-name params; positional arrays are valid JSON-RPC but meaningless here.
    if isinstance(params, list):
        return {"_positional": params}
    raise _bad("params must be an object or an array", line)


def _error_response(ident: Any, err: Any, line: bytes) -> ErrorResponse:
    if not isinstance(err, dict):
        raise _bad("error must be an object", line)
    code = err.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise _bad("error.code must be an integer", line)
    message = err.get("message", "")
    if not isinstance(message, str):
        message = str(message)
    if ident is not None and not _valid_id(ident):
        raise _bad("id must be an integer, a string or null", line)
    return ErrorResponse(ident, RpcError(code, message, err.get("data")))


#: Every digit to "9", everything else to a space: 19 nines in a row in a translated line mark
#: an integer orjson could read as a float (beyond 64 bits), found by two C calls.
_DIGITS = bytes(0x39 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"9" * 19


def _std_loads(line: bytes) -> Any:
    try:
        # Decoded here rather than by json.loads(bytes), which sniffs the encoding of every line
        # (ACP is UTF-8, acp.md §2); a leading BOM stays accepted as before.
        return json.loads(line.decode("utf-8-sig" if line.startswith(b"\xef\xbb\xbf") else "utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad("not JSON", line) from exc


def parse_line(line: bytes) -> Message:
    """Parse one line (without or with its trailing newline) into a message.

    Raises :class:`ProtocolError` for anything that is not a single JSON-RPC 2.0 object.

    With orjson installed it parses first (a third of json's cost, and every line of a turn is
    parsed: issue 16). orjson accepts a subset of what json does (no NaN, no BOM, no lone
    surrogates), so a line it refuses, or whose message shape it fails, is parsed again by json;
    and it reads an integer beyond 64 bits as a float, so a line with 19 digits in a row goes to
    json directly. The messages never depend on whether orjson is installed.
    """
    if _fast_loads is not None and _LONG_DIGITS not in line.translate(_DIGITS):
        try:
            return _message(_fast_loads(line), line)
        except (ValueError, ProtocolError):
            pass
    return _message(_std_loads(line), line)


def _message(obj: Any, line: bytes) -> Message:
    if not isinstance(obj, dict):
        raise _bad("not a JSON object (batches are not used by ACP)", line)
    version = obj.get("jsonrpc", "2.0")
    if version != "2.0":
        raise _bad("jsonrpc must be '2.0'", line)
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise _bad("method must be a non-empty string", line)
        if "id" not in obj:
            params = obj.get("params")
            return Notification(method, params if type(params) is dict else _params(obj, line))
        if not _valid_id(obj["id"]):
            raise _bad("id must be an integer or a string", line)
        return Request(obj["id"], method, _params(obj, line))
    if "id" not in obj:
        raise _bad("neither a call nor an answer", line)
    ident = obj["id"]
    if "error" in obj:
        return _error_response(ident, obj["error"], line)
    if "result" in obj:
        if not _valid_id(ident):
            raise _bad("id must be an integer or a string", line)
        return Response(ident, obj["result"])
    raise _bad("an answer needs result or error", line)


class MessageDecoder:
    """Incremental decoder: :meth:`feed` any split of the byte stream, get complete messages.

    Malformed lines come back as ``ProtocolError`` items (not raised). A line longer than
    ``max_line_bytes`` is reported once as a ``ProtocolError`` item and skipped up to its newline,
    so the buffer never grows without bound.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_line_bytes
        self._discarding = False
        self._scanned = 0  # bytes of _buf already known to hold no newline (long lines stay O(n))

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message | ProtocolError]:
        """Add bytes; return the messages (and malformed-line errors) of every completed line."""
        out: list[Message | ProtocolError] = []
        if not self._buf and not self._discarding:
            # The usual case, whole lines in one read: split the bytes as they are, without
            # copying them through the buffer line by line.
            *lines, rest = data.split(b"\n")
            for line in lines:
                self._one(line, out)
            if rest:
                self._keep(rest, out)
            return out
        self._buf += data
        start = 0
        while True:
            nl = self._buf.find(b"\n", max(start, self._scanned))
            if nl < 0:
                break
            self._scanned = 0
            line = bytes(self._buf[start:nl])
            start = nl + 1
            if self._discarding:
                self._discarding = False
                continue
            self._one(line, out)
        del self._buf[:start]
        self._scanned = len(self._buf)
        self._check_overlong(out)
        return out

    def _keep(self, rest: bytes, out: list[Message | ProtocolError]) -> None:
        """Hold the start of an incomplete line."""
        self._buf += rest
        self._scanned = len(self._buf)
        self._check_overlong(out)

    def _check_overlong(self, out: list[Message | ProtocolError]) -> None:
        if len(self._buf) > self._max:
            if not self._discarding:
                out.append(ProtocolError(f"agent acp sent a line longer than {self._max} bytes; skipped"))
            self._discarding = True
            self._buf.clear()
            self._scanned = 0

    def close(self) -> list[Message | ProtocolError]:
        """End of stream: a final line without a newline is still parsed."""
        out: list[Message | ProtocolError] = []
        if self._buf and not self._discarding:
            self._one(bytes(self._buf), out)
        self._buf.clear()
        self._scanned = 0
        self._discarding = False
        return out

    def _one(self, line: bytes, out: list[Message | ProtocolError]) -> None:
        if len(line) <= self._max:
            try:
                # A trailing "\r" is JSON whitespace: parsed as it is, no copy per line.
                out.append(parse_line(line))
                return
            except (ValueError, ProtocolError):
                pass
        # The rare paths, with the "\r" removed so that errors quote the line without it.
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return
        if len(line) > self._max:
            out.append(ProtocolError(f"agent acp sent a line longer than {self._max} bytes; skipped"))
            return
        try:
            out.append(parse_line(line))
        except ProtocolError as exc:
            out.append(exc)


# ----------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------
#: ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`` without
#: building an encoder for every line (json.dumps does when given any option).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON-RPC object as a compact line. ``json.dumps`` escapes newlines inside strings, so
    the only ``\\n`` is the terminator. Unserialisable values raise :class:`ProtocolError`."""
    try:
        text = _ENCODE(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"cannot encode a JSON-RPC message: {exc}") from exc
    return text.encode("utf-8") + b"\n"


def encode_request(ident: RequestId, method: str, params: dict[str, Any] | None = None) -> bytes:
    """A request line."""
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        obj["params"] = params
    return encode(obj)


def encode_notification(method: str, params: dict[str, Any] | None = None) -> bytes:
    """A notification line (no id)."""
    obj: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        obj["params"] = params
    return encode(obj)


def encode_result(ident: RequestId, result: Any) -> bytes:
    """A success answer line."""
    return encode({"jsonrpc": "2.0", "id": ident, "result": result})


def encode_error(ident: RequestId | None, code: int, message: str, data: Any = None) -> bytes:
    """An error answer line."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return encode({"jsonrpc": "2.0", "id": ident, "error": err})
