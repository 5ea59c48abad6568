"""Sans-IO parser of ``agent --print --output-format stream-json`` output (acp.md §6.2–6.3).

Bytes (or lines) in, parsed events out; no processes or asyncio here, so it is tested on golden
lines. It

* removes the duplicates ``--stream-partial-output`` produces (acp.md §6.3): text arrives as
  deltas carrying ``timestamp_ms`` (a delta is sometimes repeated with ``model_call_id``) and each
  message is then repeated in full without ``timestamp_ms``; only new text is emitted;
* surfaces thinking deltas, the chat id (``session_id``) and ``usage`` from the ``result`` event in
  either documented shape (nested camelCase or top-level keys, acp.md §6.3), tolerating absence;
* holds back a trailing answer line that may be an error Cursor wrote *into the text* while still
  reporting success (acp.md §4, §9: ``Error: T: [resource_exhausted] Error``) and reports it as
  :class:`InbandError` instead of answer text;
* stops at the ``result`` event (acp.md §6.6: the process sometimes keeps running afterwards);
* keeps lines that are not JSON objects (warnings some builds print on stdout) as
  :class:`StrayLine` for error classification.

Malformed input never raises anything but :class:`~cursorpipe.errors.ProtocolError` (only for a
line longer than the limit); everything else is tolerated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._constants import PROCESS_LINE_LIMIT
from ..errors import ProtocolError
from ..types import Usage

__all__ = [
    "Finished",
    "InbandError",
    "ParsedEvent",
    "SessionStarted",
    "StrayLine",
    "StreamJsonParser",
    "TextChunk",
    "ThinkingChunk",
    "ToolActivity",
    "parse_usage",
]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """``system/init``: the chat id, the model's display name and where the key came from."""

    session_id: str
    model: str = ""
    api_key_source: str = ""


@dataclass(frozen=True, slots=True)
class TextChunk:
    """New answer text (duplicates already removed)."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingChunk:
    """A thinking delta."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """One of Cursor's own tool calls (``readToolCall``…) started or completed. Informational:
    the CLI runs these itself; they are not caller-defined tool calls."""

    call_id: str
    name: str
    subtype: str


@dataclass(frozen=True, slots=True)
class InbandError:
    """An error Cursor wrote into the answer text (acp.md §4, §9); reported before ``Finished``."""

    text: str


@dataclass(frozen=True, slots=True)
class StrayLine:
    """A stdout line that is not a JSON object (kept for error classification)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The ``result`` event: the turn is over."""

    result: str
    session_id: str | None
    usage: Usage | None
    is_error: bool = False
    subtype: str = "success"
    request_id: str | None = None
    duration_ms: int | None = None


ParsedEvent: TypeAlias = (
    SessionStarted | TextChunk | ThinkingChunk | ToolActivity | InbandError | StrayLine | Finished
)

# acp.md §4/§9/§5: in-band errors look like "Error: T: [resource_exhausted] Error",
# "Error: I: AI Model Not Found / …", "Error: You've hit your usage limit". Only a line that starts
# like one is held back; the exact set Cursor uses is not documented [S], so the prefix is generic
# (a one-letter gRPC-ish kind) plus the usage-limit wording.
_INBAND = re.compile(r"^Error: (?:[A-Z]: |You've hit your usage limit)")
_INBAND_PREFIXES = ("Error: You've hit your usage limit",)
# An in-band error is the end of the answer; a longer tail after the marker is ordinary text.
_INBAND_MAX_CHARS = 4000
_INBAND_MAX_LINES = 12


def _could_become_inband(line: str) -> bool:
    """Whether the unfinished ``line`` may still turn out to start an in-band error."""
    if _INBAND.match(line):
        return True
    head = "Error: "
    if len(line) <= len(head):
        return head.startswith(line)
    if not line.startswith(head):
        return False
    rest = line[len(head) :]
    if any(p[len(head) :].startswith(rest) for p in _INBAND_PREFIXES):
        return True
    # "Error: X: " with X an upper-case letter
    return rest[0].isupper() and (len(rest) == 1 or (rest[1] == ":" and (len(rest) == 2 or rest[2] == " ")))


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float):
        return max(0, int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _first(source: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in source:
            return source[name]
    return None


def parse_usage(event: Mapping[str, Any]) -> Usage | None:
    """Usage from a ``result`` event: nested ``usage`` (camelCase, or snake_case defensively) or
    top-level ``inputTokens``/``outputTokens`` (acp.md §6.3). ``None`` when absent."""
    nested = event.get("usage")
    source: Mapping[str, Any]
    if isinstance(nested, Mapping):
        source = nested
    elif "inputTokens" in event or "outputTokens" in event:
        source = event
    else:
        return None
    inp = _first(source, "inputTokens", "input_tokens")
    out = _first(source, "outputTokens", "output_tokens")
    if inp is None and out is None:
        return None
    return Usage(
        input_tokens=_int(inp),
        output_tokens=_int(out),
        cache_read_tokens=_int(
            _first(source, "cacheReadTokens", "cache_read_tokens", "cache_read_input_tokens")
        ),
        cache_write_tokens=_int(
            _first(source, "cacheWriteTokens", "cache_write_tokens", "cache_creation_input_tokens")
        ),
        reasoning_tokens=_int(_first(source, "reasoningTokens", "reasoning_tokens")),
    )


def _message_text(event: Mapping[str, Any]) -> str:
    message = event.get("message")
    content: Any = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for item in content:
        if (
            isinstance(item, Mapping)
            and item.get("type") in (None, "text")
            and isinstance(item.get("text"), str)
        ):
            parts.append(item["text"])
        elif isinstance(item, str):
            parts.append(item)
    return "".join(parts)


class StreamJsonParser:
    """Feed stdout bytes (:meth:`feed`) or lines (:meth:`feed_line`); call :meth:`close` at end of
    file. Each returns the events parsed so far. After ``Finished`` further input is ignored."""

    def __init__(self, *, max_line_bytes: int = PROCESS_LINE_LIMIT) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self.session_id: str | None = None
        self.finished: Finished | None = None
        self.stray: list[str] = []
        # deduplication state (acp.md §6.3)
        self._partial = False
        self._segment = ""
        self._total = ""
        self._last_delta: str | None = None
        # in-band error hold-back (acp.md §4/§9)
        self._held = ""
        self._capture: str | None = None

    # -- input ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[ParsedEvent]:
        """Parse a chunk of raw stdout (any split)."""
        events: list[ParsedEvent] = []
        if self.finished is not None:
            return events
        self._buf += data
        while self.finished is None:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            events += self.feed_line(line)
        if len(self._buf) > self._max:
            size = len(self._buf)
            self._buf.clear()
            raise ProtocolError(
                f"The agent wrote a stream-json line longer than {self._max} bytes ({size} bytes so far).",
                code="line_too_long",
            )
        return events

    def feed_line(self, line: bytes | str) -> list[ParsedEvent]:
        """Parse one complete line (with or without its newline)."""
        if self.finished is not None:
            return []
        if isinstance(line, bytes):
            if len(line) > self._max:
                raise ProtocolError(
                    f"The agent wrote a stream-json line longer than {self._max} bytes.", code="line_too_long"
                )
            text = line.decode("utf-8", "replace")
        else:
            text = line
        text = text.strip()
        if not text:
            return []
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            self.stray.append(text[:2000])
            return [StrayLine(text)]
        return self._event(obj)

    def close(self) -> list[ParsedEvent]:
        """End of file: parse a last unterminated line. Held-back text is *not* released (a stream
        that ends without ``result`` is an error the caller reports)."""
        if self.finished is not None or not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return self.feed_line(rest)

    @property
    def text(self) -> str:
        """All answer text emitted so far."""
        return self._total

    # -- events --------------------------------------------------------------------------------
    def _event(self, obj: Mapping[str, Any]) -> list[ParsedEvent]:
        sid = obj.get("session_id")
        if isinstance(sid, str) and sid:
            self.session_id = sid
        kind = obj.get("type")
        if kind == "system":
            if obj.get("subtype") == "init" and self.session_id:
                return [
                    SessionStarted(
                        self.session_id, str(obj.get("model") or ""), str(obj.get("apiKeySource") or "")
                    )
                ]
            return []
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "thinking":
            text = obj.get("text")
            if obj.get("subtype", "delta") == "delta" and isinstance(text, str) and text:
                return [ThinkingChunk(text)]
            return []
        if kind == "tool_call":
            call = obj.get("tool_call")
            name = next(iter(call), "") if isinstance(call, Mapping) and call else ""
            return [ToolActivity(str(obj.get("call_id") or ""), str(name), str(obj.get("subtype") or ""))]
        if kind == "result":
            return self._result(obj)
        return []  # "user" echo and unknown kinds carry nothing for us

    def _assistant(self, obj: Mapping[str, Any]) -> list[ParsedEvent]:
        text = _message_text(obj)
        if not text:
            return []
        if "timestamp_ms" in obj:
            # A delta. acp.md §6.3: "sometimes a duplicate with model_call_id" — a delta that
            # repeats the previous one and carries model_call_id is that duplicate [C, shape S].
            if "model_call_id" in obj and text == self._last_delta:
                return []
            self._partial = True
            self._last_delta = text
            self._segment += text
            return self._emit(text)
        # A complete message (no timestamp_ms).
        self._last_delta = None
        if not self._partial:
            return self._emit(text)  # no partial output: one complete message per segment
        segment, self._segment = self._segment, ""
        if segment and text == segment:
            return []
        if segment and text.startswith(segment):
            return self._emit(text[len(segment) :])
        if self._total.endswith(text):
            self._segment = segment  # a repeat of text already shown (e.g. of the last delta)
            return []
        if self._total and text.startswith(self._total):
            return self._emit(text[len(self._total) :])  # cumulative over the whole answer
        return self._emit(text)  # a message that was not streamed as deltas

    def _result(self, obj: Mapping[str, Any]) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        result = obj.get("result")
        result_text = result if isinstance(result, str) else ""
        if not self._total and self._capture is None and not self._held and result_text:
            # acp.md §1.1: fall back to result.result when no assistant text was streamed.
            events += self._emit(result_text)
        events += self._flush_inband()
        duration = obj.get("duration_ms")
        request_id = obj.get("request_id")
        self.finished = Finished(
            result=result_text,
            session_id=self.session_id,
            usage=parse_usage(obj),
            is_error=bool(obj.get("is_error")) or obj.get("subtype") == "error",
            subtype=str(obj.get("subtype") or "success"),
            request_id=request_id if isinstance(request_id, str) else None,
            duration_ms=duration if isinstance(duration, int) and not isinstance(duration, bool) else None,
        )
        events.append(self.finished)
        return events

    # -- answer text with in-band error hold-back -------------------------------------------------
    @staticmethod
    def _fits(capture: str) -> bool:
        """Whether captured text is short enough to be an error notice ending the answer."""
        return len(capture) <= _INBAND_MAX_CHARS and capture.count("\n") <= _INBAND_MAX_LINES

    def _emit(self, text: str) -> list[ParsedEvent]:
        out: list[ParsedEvent] = []
        if self._capture is not None:
            self._capture += text
            if self._fits(self._capture):
                return out
            # Too long to be an error notice: its first line was ordinary text; rescan the rest.
            text, self._capture = self._capture, None
            first, newline, text = text.partition("\n")
            out += self._out(first + newline)
        buf = self._held + text
        self._held = ""
        start = 0
        while True:
            nl = buf.find("\n", start)
            line = buf[start : nl if nl >= 0 else len(buf)]
            if _INBAND.match(line) and self._fits(buf[start:]):
                out += self._out(buf[:start])
                self._capture = buf[start:]
                return out
            if nl < 0:
                if _could_become_inband(line) and not _INBAND.match(line):
                    out += self._out(buf[:start])
                    self._held = line
                    return out
                out += self._out(buf)
                return out
            start = nl + 1

    def _out(self, text: str) -> list[ParsedEvent]:
        if not text:
            return []
        self._total += text
        return [TextChunk(text)]

    def _flush_inband(self) -> list[ParsedEvent]:
        if self._capture is not None:
            captured, self._capture = self._capture, None
            return [InbandError(captured.strip())]
        held, self._held = self._held, ""
        if held and _INBAND.match(held):
            return [InbandError(held.strip())]
        return self._out(held)
