"""``POST /v1/chat/completions`` in OpenAI's wire format: streaming exactly as OpenAI does it
(integrations.md §4.2) and not, ``n`` choices, tool calls, ``response_format``.

The turn itself runs in the shared loop (``_turn.py``); this module only renders. Streamed chunks
are assembled from pre-encoded constant parts (id, created, model) around the one piece of JSON
that changes per chunk (issue 16: the per-chunk path is the server's hot path).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._fold import TurnAccumulator
from .._redact import redact
from ..types import (
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    Usage,
)
from ._errors import APIError
from ._json import dumps
from ._requests import ChatParams, parse_chat
from ._sse import KEEPALIVE
from ._wire import WireFormat

__all__ = [
    "CHAT",
    "DROPPED_CALLS_HEADER",
    "INVALID_CALLS_HEADER",
    "ChatRenderer",
    "call_json",
    "finish_reason",
    "honest_finish",
    "invalid_call_json",
    "runnable_calls",
    "usage_json",
]

log = logging.getLogger("cursorpipe.server")

_FINISH = {"stop", "length", "tool_calls", "content_filter"}
#: How many tool calls the model made that were invalid (details in ``cursorpipe_invalid_tool_calls``).
INVALID_CALLS_HEADER = "x-cursorpipe-invalid-tool-calls"
#: How many valid calls were dropped because the request said ``parallel_tool_calls: false``.
DROPPED_CALLS_HEADER = "x-cursorpipe-dropped-tool-calls"
_DONE = b"data: [DONE]\n\n"


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish_reason for a TurnEnd stop reason."""
    return stop_reason if stop_reason in _FINISH else "stop"


def usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object.

    Cursor's ``input_tokens`` already includes cache reads and writes (live-dialect.md row 13), as
    OpenAI's ``prompt_tokens`` includes cached tokens: it is reported once, and ``cached_tokens``
    says how many of those prompt tokens were cache reads (adding the cache figures on top would
    count them twice).
    """
    prompt = usage.input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def runnable_calls(run: TurnAccumulator, parallel: bool) -> list[ToolCallEvent]:
    """The valid calls in order; only the first when the request said
    ``parallel_tool_calls: false`` (no protocol field exists to forbid parallel calls, so a model
    that made several anyway is cut down to its first here, as OpenAI would have)."""
    calls = run.tool_call_events
    return calls if parallel else calls[:1]


def honest_finish(run: TurnAccumulator) -> str:
    """``tool_calls`` only when there is a valid call to run; otherwise ``stop`` (e.g. the model's
    only call was invalid), never a finish_reason the answer does not back."""
    finish = finish_reason(run.stop_reason)
    has_calls = bool(run.tool_call_events)
    if finish == "tool_calls" and not has_calls:
        return "stop"
    if has_calls and finish == "stop":
        return "tool_calls"
    return finish


def call_json(event: ToolCallEvent, index: int | None = None) -> dict[str, Any]:
    """OpenAI's ``tool_calls`` item for a call (with ``index`` when streaming)."""
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(
        {
            "id": event.call.id,
            "type": "function",
            "function": {"name": event.call.name, "arguments": event.call.arguments},
        }
    )
    return out


def invalid_call_json(event: ToolCallEvent) -> dict[str, Any]:
    """One entry of the non-standard ``cursorpipe_invalid_tool_calls`` field: a call the model made
    that the core rejected (unknown tool, arguments that are not JSON...). It is never answered as
    a ``tool_calls`` item, since the caller could not run it."""
    out = call_json(event)
    out["error"] = redact(event.error or "")
    return out


def _call_deltas(event: ToolCallEvent, fragments: list[ToolCallDelta], index: int) -> list[dict[str, Any]]:
    """OpenAI's streamed shape for one call at output position ``index``: id, type and name with
    ``arguments: ""`` first, then ``{"index", "function": {"arguments": fragment}}`` pieces.

    The pieces are the model's own fragments when they add up to the final arguments; otherwise
    (emulated calls, or a transport that normalised the JSON) the complete arguments as one piece.
    """
    head: dict[str, Any] = {
        "index": index,
        "id": event.call.id,
        "type": "function",
        "function": {"name": event.call.name, "arguments": ""},
    }
    pieces = [f.arguments_delta for f in fragments if f.arguments_delta]
    if "".join(pieces) != event.call.arguments:
        pieces = [event.call.arguments] if event.call.arguments else []
    out = [{"tool_calls": [head]}]
    out.extend({"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in pieces)
    return out


class ChatRenderer:
    """One chat completion request, rendered as OpenAI renders it."""

    keepalive = KEEPALIVE
    # One of these per open stream: no instance dict (issue 16, memory per stream).
    __slots__ = ("_created", "_emitted", "_finished", "_head", "_id", "_params", "_pending", "_tail", "spec")

    def __init__(self, params: ChatParams) -> None:
        self.spec = params
        self._params = params
        self._id = "chatcmpl-" + secrets.token_hex(12)
        self._created = int(time.time())
        n = params.n
        # Tool-call fragments wait for their complete ToolCallEvent: only then is it known whether
        # the call is valid (an invalid one must never reach the client as a call it would run).
        self._pending: list[dict[int, list[ToolCallDelta]]] = [{} for _ in range(n)]
        self._emitted = [0] * n
        self._finished: set[int] = set()
        # usage is null on every chunk but the last when the client asked for it (§4.2)
        self._tail = b'],"usage":null}\n\n' if params.include_usage else b"]}\n\n"
        self._head = b""

    # -- streaming ---------------------------------------------------------------------------
    def _set_model(self, model: str) -> None:
        self._head = (
            b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            % (
                self._id.encode(),
                self._created,
                dumps(model),
            )
            + b'"system_fingerprint":null,"choices":['
        )

    def _chunk(self, index: int, delta: bytes, finish: bytes = b"null", extra: bytes = b"") -> bytes:
        choice = b'{"index":%d,"delta":%s,"logprobs":null,"finish_reason":%s%s}' % (
            index,
            delta,
            finish,
            extra,
        )
        return self._head + choice + self._tail

    def open(self, model: str) -> bytes:
        self._set_model(model)
        role = b'{"role":"assistant","content":""}'
        return b"".join(self._chunk(i, role) for i in range(self._params.n))

    def event(self, index: int, event: Event, run: TurnAccumulator) -> bytes:
        handler = _ON.get(type(event))
        return handler(self, index, event, run) if handler is not None else b""

    def _on_text(self, index: int, event: TextDelta, run: TurnAccumulator) -> bytes:
        if event.notice or not event.text:
            return b""
        return self._chunk(index, b'{"content":' + dumps(event.text) + b"}")

    def _on_thinking(self, index: int, event: ThinkingDelta, run: TurnAccumulator) -> bytes:
        if not event.text:
            return b""
        return self._chunk(index, b'{"reasoning_content":' + dumps(event.text) + b"}")

    def _on_fragment(self, index: int, event: ToolCallDelta, run: TurnAccumulator) -> bytes:
        self._pending[index].setdefault(event.index, []).append(event)
        return b""

    def _on_call(self, index: int, event: ToolCallEvent, run: TurnAccumulator) -> bytes:
        fragments = self._pending[index].pop(event.index, [])
        # Handled calls were answered inside the turn; invalid ones go on the final chunk.
        if event.handled or event.error is not None:
            return b""
        if not self._params.parallel_tool_calls and self._emitted[index] >= 1:
            log.info("stream %s: parallel_tool_calls=false; dropped call %s", self._id, event.call.name)
            return b""
        deltas = _call_deltas(event, fragments, self._emitted[index])
        self._emitted[index] += 1
        return b"".join(self._chunk(index, dumps(d)) for d in deltas)

    def _on_end(self, index: int, event: TurnEnd, run: TurnAccumulator) -> bytes:
        return self.run_end(index, run)

    def _on_info(self, index: int, event: TransportInfo, run: TurnAccumulator) -> bytes:
        if event.model and index == 0:
            self._set_model(event.model)  # the routed model, if it came after the first chunk
        return b""

    def run_end(self, index: int, run: TurnAccumulator) -> bytes:
        if index in self._finished:
            return b""
        self._finished.add(index)
        extra = b""
        if run.invalid_tool_calls:  # non-standard (README)
            invalid = [invalid_call_json(e) for e in run.invalid_tool_calls]
            extra = b',"cursorpipe_invalid_tool_calls":' + dumps(invalid)
        return self._chunk(index, b"{}", b'"%s"' % honest_finish(run).encode(), extra)

    def close(self, runs: Sequence[TurnAccumulator], usage: Usage) -> bytes:
        if not self._params.include_usage:
            return _DONE
        return self._head + b'],"usage":' + dumps(usage_json(usage)) + b"}\n\n" + _DONE

    def fail(self, err: APIError) -> bytes:
        # vLLM's convention (§4.2): an error event, then [DONE]; the OpenAI SDK raises on it.
        return b"data: " + dumps(err.body()) + b"\n\n" + _DONE

    # -- not streaming -----------------------------------------------------------------------
    def _message(self, run: TurnAccumulator) -> tuple[dict[str, Any], int]:
        """The choice's message and how many valid calls ``parallel_tool_calls: false`` dropped."""
        # response_format: the validated value alone, as JSON text (the model may have wrapped it
        # in prose or code fences, which the core's extractor tolerated).
        text = json.dumps(run.parsed, ensure_ascii=False) if run.parsed is not None else run.text
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if run.thinking:
            message["reasoning_content"] = run.thinking
        calls = runnable_calls(run, self._params.parallel_tool_calls)
        if calls:
            message["tool_calls"] = [call_json(c) for c in calls]
            message["content"] = text or None  # OpenAI: null when the answer is only calls
        if run.invalid_tool_calls:
            # Non-standard, documented (README): calls the model made that cannot be run.
            message["cursorpipe_invalid_tool_calls"] = [invalid_call_json(e) for e in run.invalid_tool_calls]
        return message, len(run.tool_call_events) - len(calls)

    def body(
        self, runs: Sequence[TurnAccumulator], usage: Usage, model: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        choices = []
        invalid = dropped = 0
        for i, run in enumerate(runs):
            message, cut = self._message(run)
            dropped += cut
            invalid += len(run.invalid_tool_calls)
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": honest_finish(run)}
            )
        headers: dict[str, str] = {}
        if invalid:
            headers[INVALID_CALLS_HEADER] = str(invalid)
        if dropped:
            headers[DROPPED_CALLS_HEADER] = str(dropped)
        payload = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_json(usage),
        }
        return payload, headers


#: The streaming handler of each event type (built once, not per request).
_ON: dict[type, Callable[[ChatRenderer, int, Any, TurnAccumulator], bytes]] = {
    TextDelta: ChatRenderer._on_text,
    ThinkingDelta: ChatRenderer._on_thinking,
    ToolCallDelta: ChatRenderer._on_fragment,
    ToolCallEvent: ChatRenderer._on_call,
    TurnEnd: ChatRenderer._on_end,
    TransportInfo: ChatRenderer._on_info,
}

#: ``/v1/chat/completions`` (sessions via ``X-Cursor-Session-ID``).
CHAT = WireFormat(
    "chat.completions", True, lambda body, strict: ChatRenderer(parse_chat(body, strict=strict))
)
