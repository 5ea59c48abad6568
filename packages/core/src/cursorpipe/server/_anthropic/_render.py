"""Rendering a turn's events in Anthropic's Messages wire format, sans-IO (docs/anthropic.md §3-4).

:class:`MessageStream` turns cursorpipe events into the exact server-sent event sequence of a
streamed message (``message_start``, ``ping``, per block ``content_block_start`` /
``content_block_delta`` / ``content_block_stop``, ``message_delta``, ``message_stop``; ``error``
mid-stream) as bytes; :func:`message_json` renders a finished turn (the shared fold,
:class:`~cursorpipe.TurnAccumulator`) as the non-streaming message. Neither does I/O.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..._fold import TurnAccumulator
from ..._redact import redact
from ...types import (
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    Usage,
    estimate_tokens,
)
from ._errors import error_frame

__all__ = [
    "THINKING_SIGNATURE",
    "MessageStream",
    "message_id",
    "message_json",
    "stop_reason",
    "turn_usage",
    "usage_json",
]

log = logging.getLogger("cursorpipe.server")

#: The ``signature`` of every thinking block: Cursor signs no reasoning, and a client must send
#: passed-back thinking blocks unchanged, so an opaque constant marks them as cursorpipe's
#: (incoming thinking blocks are dropped whatever their signature, docs/anthropic.md §2).
THINKING_SIGNATURE = "cursorpipe-unsigned"

#: cursorpipe's stop reasons -> Anthropic's (``stop`` is refined by :func:`stop_reason`).
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


#: The ``content_block_start`` payloads of streamed text and thinking blocks.
_EMPTY: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}


def message_id() -> str:
    """A fresh Anthropic-style message id (``msg_`` + 24 random hex digits)."""
    return "msg_" + secrets.token_hex(12)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def frame(name: str, payload: dict[str, Any]) -> bytes:
    """One named server-sent event, as Anthropic sends them: ``event:`` then ``data:`` JSON."""
    return f"event: {name}\ndata: {_dumps(payload)}\n\n".encode()


PING = frame("ping", {"type": "ping"})


def usage_json(usage: Usage) -> dict[str, Any]:
    """Anthropic's usage object.

    Anthropic's ``input_tokens`` counts only the uncached prompt tokens: the prompt is
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``. Cursor's
    ``input_tokens`` already includes its cache reads and writes (live-dialect.md row 13), so they
    are taken out of it here and reported beside it: the three add up to Cursor's prompt count,
    never more.
    """
    read, written = usage.cache_read_tokens, usage.cache_write_tokens
    return {
        "input_tokens": max(0, usage.input_tokens - read - written),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }


def stop_reason(reason: str | None, *, tool_use: bool, stop_sequence: str | None) -> str:
    """Anthropic's ``stop_reason``: ``tool_use`` exactly when the answer holds a tool call to run,
    ``stop_sequence`` when one of the request's stop sequences ended it."""
    if tool_use and reason in (None, "stop", "tool_calls"):
        return "tool_use"
    if stop_sequence is not None:
        return "stop_sequence"
    found = _STOP.get(reason or "stop", "end_turn")
    return "end_turn" if found == "tool_use" else found  # the only calls were invalid or dropped


def turn_usage(acc: TurnAccumulator, prompt_tokens: int) -> Usage:
    """The turn's usage as reported, or an estimate (``estimated=True``) from the prompt's
    estimated tokens and the answer."""
    if acc.usage is not None:
        return acc.usage
    answer = acc.text + acc.thinking
    return Usage(input_tokens=prompt_tokens, output_tokens=estimate_tokens(answer), estimated=True)


def _call_input(event: ToolCallEvent) -> dict[str, Any]:
    try:
        return event.call.parsed_arguments()
    except ValueError:  # valid calls carry JSON objects; this only guards a transport's slip
        return {}


def message_json(
    acc: TurnAccumulator,
    *,
    msg_id: str,
    model: str,
    usage: Usage,
    parallel: bool = True,
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    """The non-streaming Messages response for a finished turn: ``thinking``, ``text`` and
    ``tool_use`` blocks in that order; only the first tool call when parallel calls were disabled
    (no protocol field forbids them, so extra ones are cut here, as Anthropic would have)."""
    content: list[dict[str, Any]] = []
    if acc.thinking:
        content.append({"type": "thinking", "thinking": acc.thinking, "signature": THINKING_SIGNATURE})
    if acc.parsed is not None:
        # A validated structured answer: the value itself as JSON text (the model may have
        # wrapped it in prose or code fences, which the core's extractor tolerated).
        content.append({"type": "text", "text": _dumps(acc.parsed)})
    elif acc.text:
        content.append({"type": "text", "text": acc.text})
    calls = acc.tool_call_events if parallel else acc.tool_call_events[:1]
    content.extend(
        {"type": "tool_use", "id": e.call.id, "name": e.call.name, "input": _call_input(e)} for e in calls
    )
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(acc.stop_reason, tool_use=bool(calls), stop_sequence=stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": usage_json(usage),
    }


class MessageStream:
    """The SSE bytes of one streamed message, event by event.

    Call :meth:`start` once, :meth:`feed` with every event of the turn, then :meth:`finish` at its
    end (or :meth:`error` on a failure, :data:`PING` while waiting). Text and thinking are
    forwarded as they arrive, each in its own content block (a new block whenever the kind
    changes). Tool-call fragments wait for their complete :class:`ToolCallEvent`: only then is it
    known whether the call is valid, and an invalid one must never reach the client as a
    ``tool_use`` it would run (it is logged instead). ``stop_sequence`` is read at the end (the
    stop-sequence stage fills it in while the turn runs).
    """

    def __init__(
        self,
        *,
        msg_id: str,
        model: str,
        prompt_tokens: int,
        parallel: bool = True,
        stop_sequence: Callable[[], str | None] = lambda: None,
        request_id: str | None = None,
    ) -> None:
        self.msg_id = msg_id
        self.model = model
        self.acc = TurnAccumulator()
        self._prompt_tokens = prompt_tokens
        self._parallel = parallel
        self._stop_sequence = stop_sequence
        self._request_id = request_id
        self._index = -1
        self._open: str | None = None
        self._fragments: dict[int, list[ToolCallDelta]] = {}
        self._tool_uses = 0
        self.finished = False
        #: True once a content block was opened (the time to first token is taken there).
        self.produced = False

    # -- the stream's frames -----------------------------------------------------------------
    def start(self) -> bytes:
        """``message_start`` (an empty assistant message with the prompt's estimated usage; the
        final figures come in ``message_delta``) and the first ``ping``, as Anthropic sends them."""
        message: dict[str, Any] = {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._prompt_tokens,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        return frame("message_start", {"type": "message_start", "message": message}) + PING

    def feed(self, event: Event) -> bytes:
        """The frames for one event (``b""`` when it shows nothing to the client)."""
        self.acc.feed(event)
        if isinstance(event, TextDelta):
            if event.notice:
                log.info("cursor notice: %s", redact(event.text))
                return b""
            return self._delta("text", {"type": "text_delta", "text": event.text}) if event.text else b""
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return b""
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ToolCallDelta):
            self._fragments.setdefault(event.index, []).append(event)
            return b""
        if isinstance(event, ToolCallEvent):
            return self._tool_use(event)
        if isinstance(event, TransportInfo) and event.model and not self.produced:
            self.model = event.model
        if isinstance(event, TurnEnd):
            return self.finish()
        return b""

    def finish(self) -> bytes:
        """Close the open block, then ``message_delta`` (stop reason, final usage) and
        ``message_stop``. Idempotent: a second call returns ``b""``."""
        if self.finished:
            return b""
        self.finished = True
        out = self._close()
        matched = self._stop_sequence()
        reason = stop_reason(self.acc.stop_reason, tool_use=self._tool_uses > 0, stop_sequence=matched)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": matched if reason == "stop_sequence" else None},
            "usage": usage_json(self.usage()),
        }
        return out + frame("message_delta", delta) + frame("message_stop", {"type": "message_stop"})

    def error(self, exc: BaseException) -> bytes:
        """A mid-stream ``error`` event; the stream ends after it (no ``message_stop``)."""
        self.finished = True
        return error_frame(exc, self._request_id)

    def usage(self) -> Usage:
        """The turn's usage (see :func:`turn_usage`)."""
        return turn_usage(self.acc, self._prompt_tokens)

    # -- blocks ------------------------------------------------------------------------------
    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return frame("content_block_delta", payload)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            signature = {"type": "signature_delta", "signature": THINKING_SIGNATURE}
            out = self._block_delta(signature)
        self._open = None
        return out + frame("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        self.produced = True
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + frame("content_block_start", start)

    def _delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        out = b""
        if self._open != kind:
            out = self._open_block(kind, _EMPTY[kind])
        return out + self._block_delta(delta)

    def _tool_use(self, event: ToolCallEvent) -> bytes:
        fragments = self._fragments.pop(event.index, [])
        if event.handled:
            return b""  # answered inside the turn by a tool handler: not the client's to run
        if event.error is not None:
            log.warning("dropped an invalid tool call %r: %s", event.call.name, redact(event.error))
            return b""
        if not self._parallel and self._tool_uses >= 1:
            log.info("disable_parallel_tool_use: dropped the extra call %r", event.call.name)
            return b""
        self._tool_uses += 1
        block = {"type": "tool_use", "id": event.call.id, "name": event.call.name, "input": {}}
        out = self._open_block("tool_use", block)
        # The model's own fragments when they add up to the final arguments; otherwise (emulated
        # calls, or a transport that normalised the JSON) the complete arguments in one piece.
        pieces = [f.arguments_delta for f in fragments if f.arguments_delta]
        if "".join(pieces) != event.call.arguments:
            pieces = [event.call.arguments] if event.call.arguments else []
        for piece in pieces:
            delta = {"type": "input_json_delta", "partial_json": piece}
            out += self._block_delta(delta)
        return out + self._close()
