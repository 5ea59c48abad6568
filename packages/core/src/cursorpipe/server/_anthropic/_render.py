"""Rendering a turn in Anthropic's Messages wire format, sans-IO (docs/anthropic.md §3-4).

:class:`MessagesRenderer` is the Messages route's renderer for the server's shared turn loop
(``_wire.Renderer``): it turns cursorpipe events into the exact server-sent event sequence of a
streamed message (``message_start``, ``ping``, per block ``content_block_start`` /
``content_block_delta`` / ``content_block_stop``, ``message_delta``, ``message_stop``; ``error``
mid-stream), and a finished turn (the shared fold, :class:`~cursorpipe.TurnAccumulator`) into the
non-streaming message (:func:`message_json`). Nothing here does I/O.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from ..._fold import TurnAccumulator
from ..._redact import redact
from ...types import (
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    Usage,
    estimate_tokens,
)
from .._errors import APIError
from .._json import dumps
from .._openai_chat import DROPPED_CALLS_HEADER, INVALID_CALLS_HEADER
from .._sse import frame
from ._errors import anthropic_error_body
from ._request import MessagesParams
from ._stops import StopSequences

__all__ = [
    "PING",
    "THINKING_SIGNATURE",
    "MessagesRenderer",
    "message_id",
    "message_json",
    "stop_reason",
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
#: Each delta kind's frame is pre-encoded around the one value that changes (issue 16: the
#: per-delta path is the stream's hot path): ``%d`` is the block index.
_DELTA_HEAD = {
    kind: b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"' + kind.encode() + b'_delta","' + key.encode() + b'":'
    for kind, key in (("text", "text"), ("thinking", "thinking"), ("input_json", "partial_json"))
}
_DELTA_TAIL = b"}}\n\n"


def message_id() -> str:
    """A fresh Anthropic-style message id (``msg_`` + 24 random hex digits)."""
    return "msg_" + secrets.token_hex(12)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    """One named server-sent event, as Anthropic sends them: ``event:`` then ``data:`` JSON."""
    return frame(dumps(payload), name.encode())


PING = _event("ping", {"type": "ping"})


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
        content.append({"type": "text", "text": dumps(acc.parsed).decode()})
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


class MessagesRenderer:
    """One Messages request, rendered as Anthropic renders it (the shared turn loop's contract is
    in ``_wire.py``; a Messages request always has one run).

    Text and thinking are forwarded as they arrive, each in its own content block (a new block
    whenever the kind changes). Tool-call fragments wait for their complete
    :class:`ToolCallEvent`: only then is it known whether the call is valid, and an invalid one must
    never reach the client as a ``tool_use`` it would run (it is logged instead). The request's
    stop sequences are applied by :meth:`stage` on the run's events, which also tells which one
    matched.
    """

    keepalive = PING

    def __init__(self, params: MessagesParams) -> None:
        self.spec = params
        self.msg_id = message_id()
        self._prompt_tokens = estimate_tokens("".join(m.text for m in params.messages))
        self.stops = StopSequences(params.stop_sequences, self._prompt_tokens)
        self._index = -1
        self._open: str | None = None
        self._fragments: dict[int, list[ToolCallDelta]] = {}
        self._tool_uses = 0
        self._on: dict[type, Callable[[Any], bytes]] = {
            TextDelta: self._on_text,
            ThinkingDelta: self._on_thinking,
            ToolCallDelta: self._on_fragment,
            ToolCallEvent: self._on_call,
        }

    def stage(self, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        """The run's events with the request's stop sequences applied (the events themselves when
        there are none: no extra generator on the per-event path)."""
        return self.stops.apply(events) if self.stops.stops else events

    # -- streaming ---------------------------------------------------------------------------
    def open(self, model: str) -> bytes:
        """``message_start`` (an empty assistant message with the prompt's estimated usage; the
        final figures come in ``message_delta``) and the first ``ping``, as Anthropic sends them."""
        message: dict[str, Any] = {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(Usage(input_tokens=self._prompt_tokens)),
        }
        return _event("message_start", {"type": "message_start", "message": message}) + PING

    def event(self, index: int, event: Event, run: TurnAccumulator) -> bytes:
        """The frames for one event (``b""`` when it shows nothing to the client)."""
        handler = self._on.get(type(event))
        return handler(event) if handler is not None else b""

    def run_end(self, index: int, run: TurnAccumulator) -> bytes:
        """Nothing: the message ends in :meth:`close`, with the loop's final usage."""
        return b""

    def close(self, runs: Sequence[TurnAccumulator], usage: Usage) -> bytes:
        """Close the open block, then ``message_delta`` (stop reason, final usage) and
        ``message_stop``."""
        matched = self.stops.matched
        reason = stop_reason(runs[0].stop_reason, tool_use=self._tool_uses > 0, stop_sequence=matched)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": matched if reason == "stop_sequence" else None},
            "usage": usage_json(usage),
        }
        return (
            self._close() + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})
        )

    def fail(self, err: APIError) -> bytes:
        """A mid-stream ``error`` event; the stream ends after it (no ``message_stop``)."""
        return _event("error", anthropic_error_body(err))

    # -- not streaming -----------------------------------------------------------------------
    def body(
        self, runs: Sequence[TurnAccumulator], usage: Usage, model: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The message of §3 for the run, with the counts of calls that were left out in the
        headers the chat route uses (invalid calls; extra calls under ``disable_parallel_tool_use``)."""
        run = runs[0]
        payload = message_json(
            run,
            msg_id=self.msg_id,
            model=model,
            usage=usage,
            parallel=self.spec.parallel_tool_calls,
            stop_sequence=self.stops.matched,
        )
        headers: dict[str, str] = {}
        if run.invalid_tool_calls:
            headers[INVALID_CALLS_HEADER] = str(len(run.invalid_tool_calls))
        shown = sum(1 for block in payload["content"] if block["type"] == "tool_use")
        if len(run.tool_call_events) > shown:
            headers[DROPPED_CALLS_HEADER] = str(len(run.tool_call_events) - shown)
        return payload, headers

    # -- events ------------------------------------------------------------------------------
    def _on_text(self, event: TextDelta) -> bytes:
        if event.notice:
            log.info("cursor notice: %s", redact(event.text))
            return b""
        return self._delta("text", event.text) if event.text else b""

    def _on_thinking(self, event: ThinkingDelta) -> bytes:
        return self._delta("thinking", event.text) if event.text else b""

    def _on_fragment(self, event: ToolCallDelta) -> bytes:
        self._fragments.setdefault(event.index, []).append(event)
        return b""

    def _on_call(self, event: ToolCallEvent) -> bytes:
        fragments = self._fragments.pop(event.index, [])
        if event.handled:
            return b""  # answered inside the turn by a tool handler: not the client's to run
        if event.error is not None:
            log.warning("dropped an invalid tool call %r: %s", event.call.name, redact(event.error))
            return b""
        if not self.spec.parallel_tool_calls and self._tool_uses >= 1:
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
        head = _DELTA_HEAD["input_json"] % self._index
        out += b"".join(head + dumps(p) + _DELTA_TAIL for p in pieces)
        return out + self._close()

    # -- blocks ------------------------------------------------------------------------------
    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            signature = {"type": "signature_delta", "signature": THINKING_SIGNATURE}
            out = _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": signature},
            )
        self._open = None
        return out + _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _event("content_block_start", start)

    def _delta(self, kind: str, text: str) -> bytes:
        out = b"" if self._open == kind else self._open_block(kind, _EMPTY[kind])
        return out + _DELTA_HEAD[kind] % self._index + dumps(text) + _DELTA_TAIL
