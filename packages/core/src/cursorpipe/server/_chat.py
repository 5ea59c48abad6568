"""``POST /v1/chat/completions``: streaming exactly as OpenAI does it (integrations.md §4.2) and
not, ``n`` parallel runs, stop/max_tokens enforced by the client's OutputLimiter, sessions via
``X-Cursor-Session-ID``."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._redact import redact
from ..types import (
    CompletionResult,
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)
from ._body import OFFLOAD_MESSAGES, offload_if, parse_body, read_body
from ._errors import APIError, describe, error_body
from ._requests import IGNORED_HEADER, ChatParams, parse_chat
from ._runs import End, EventStreamResponse, Fanout, keepalive, run_until_disconnect, sse
from ._sessions import SESSION_HEADER
from ._state import ServerState, request_timeout

__all__ = [
    "DROPPED_CALLS_HEADER",
    "INVALID_CALLS_HEADER",
    "ClientGone",
    "RunResult",
    "chat_completions",
    "finish_reason",
    "primed_stream",
    "usage_json",
]

log = logging.getLogger("cursorpipe.server")

_FINISH = {"stop", "length", "tool_calls", "content_filter"}
#: How many tool calls the model made that were invalid (details in ``cursorpipe_invalid_tool_calls``).
INVALID_CALLS_HEADER = "x-cursorpipe-invalid-tool-calls"
#: How many valid calls were dropped because the request said ``parallel_tool_calls: false``.
DROPPED_CALLS_HEADER = "x-cursorpipe-dropped-tool-calls"


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def primed_stream(fanout: Fanout, wait_s: float) -> bool:
    await fanout.prime(wait_s)
    return True


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


@dataclass
class RunResult:
    """What one run produced.

    ``tool_calls`` holds the valid calls by the core's index; ``invalid_calls`` the calls the core
    rejected (``ToolCallEvent.error``: unknown tool, arguments that are not JSON...), which are
    never answered as ``tool_calls`` (the caller could not run them) but reported in the
    non-standard ``cursorpipe_invalid_tool_calls`` field."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    invalid_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    finish: str | None = None
    info: TransportInfo | None = None

    def feed(self, event: Event) -> None:
        """Accumulate one event."""
        if isinstance(event, TextDelta):
            if event.notice:
                log.info("cursor notice: %s", redact(event.text))
            else:
                self.text.append(event.text)
        elif isinstance(event, ThinkingDelta):
            self.thinking.append(event.text)
        elif isinstance(event, ToolCallEvent):
            # The complete call is authoritative; fragments (ToolCallDelta) only matter when
            # streaming, where _stream buffers them until this event says whether it is valid.
            if event.handled:
                return
            if event.error is not None:
                self.invalid_calls.append(invalid_call_json(event))
            else:
                self.tool_calls[event.index] = call_json(event)
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, TurnEnd):
            self.finish = finish_reason(event.stop_reason)
            self.usage = event.usage or self.usage
        elif isinstance(event, TransportInfo):
            self.info = event

    def calls(self, parallel: bool) -> list[dict[str, Any]]:
        """The valid calls in order; only the first when the request said
        ``parallel_tool_calls: false`` (no protocol field exists to forbid parallel calls, so a
        model that made several anyway is cut down to its first here, as OpenAI would have)."""
        calls = [self.tool_calls[k] for k in sorted(self.tool_calls)]
        return calls if parallel else calls[:1]

    def honest_finish(self) -> str:
        """``tool_calls`` only when there is a valid call to run; otherwise ``stop`` (e.g. the
        model's only call was invalid), never a finish_reason the answer does not back."""
        finish = self.finish or "stop"
        if finish == "tool_calls" and not self.tool_calls:
            return "stop"
        if self.tool_calls and finish == "stop":
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
    """One entry of the non-standard ``cursorpipe_invalid_tool_calls`` field."""
    return {
        "id": event.call.id,
        "type": "function",
        "function": {"name": event.call.name, "arguments": event.call.arguments},
        "error": redact(event.error or ""),
    }


def from_completion(result: CompletionResult) -> RunResult:
    """A :class:`RunResult` for a finished :class:`CompletionResult` (the core's validated
    ``complete()`` path used for ``response_format`` and forced ``tool_choice``)."""
    out = RunResult(usage=result.usage, finish=finish_reason(result.stop_reason))
    if result.parsed is not None:
        # response_format: the validated value alone, as JSON text (the model may have wrapped it
        # in prose or code fences, which the core's extractor tolerated).
        out.text.append(json.dumps(result.parsed, ensure_ascii=False))
    elif result.text:
        out.text.append(result.text)
    if result.thinking:
        out.thinking.append(result.thinking)
    for i, call in enumerate(result.tool_calls):
        out.feed(ToolCallEvent(call=call, index=i))
    for bad in result.invalid_tool_calls:
        out.feed(bad)
    out.info = TransportInfo(
        transport=result.transport, model=result.model, fallback_from=result.fallback_from
    )
    return out


def total_usage(results: list[RunResult], prompt_text: str) -> Usage:
    """Usage of all runs: the prompt once (every run saw the same prompt), completions summed."""
    usages = [
        r.usage or Usage(output_tokens=estimate_tokens("".join(r.text)), estimated=True) for r in results
    ]
    first = usages[0]
    if first.input_tokens == 0 and first.estimated:
        first = Usage(
            input_tokens=estimate_tokens(prompt_text), output_tokens=first.output_tokens, estimated=True
        )
    return Usage(
        input_tokens=first.input_tokens,
        cache_read_tokens=first.cache_read_tokens,
        cache_write_tokens=first.cache_write_tokens,
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
    )


async def collect(fanout: Fanout) -> list[RunResult]:
    """Read every run to its end (non-streaming answers); the first failure is raised."""
    results = [RunResult() for _ in range(fanout.size)]
    ended = 0
    while ended < fanout.size:
        item = await fanout.next()
        assert item is not None  # no timeout given
        index, value = item
        if isinstance(value, Exception):
            raise value
        if isinstance(value, End):
            ended += 1
            continue
        results[index].feed(value)
    return results


@dataclass
class Prepared:
    """A request ready to run: its event streams, model name and extra response headers."""

    streams: Callable[[], list[AsyncGenerator[Event, None]]]
    model: str
    prompt_text: str
    headers: dict[str, str]
    #: Set for non-streaming requests that go through the core's ``complete()`` (validated
    #: ``response_format``, one repair round for a forced ``tool_choice``): runs all ``n``.
    complete: Callable[[], Coroutine[Any, Any, list[RunResult]]] | None = None


async def _prepare(request: Request, st: ServerState, params: ChatParams) -> Prepared:
    headers: dict[str, str] = {}
    if params.ignored:
        headers[IGNORED_HEADER] = ", ".join(params.ignored)
    timeout_s = request_timeout(request)
    session_id = request.headers.get(SESSION_HEADER)
    stop = params.stop or None
    if session_id is not None:
        if params.tools or params.response_format is not None:
            # A session turn sends only the new user text (session.py); its tools would have to
            # be fixed when the session opens, which this endpoint does not model.
            raise APIError(
                400,
                f"tools and response_format are not supported with {SESSION_HEADER}; "
                "send the whole conversation without a session instead.",
                param="tools" if params.tools else "response_format",
            )
        if params.n != 1:
            raise APIError(400, f"n must be 1 with {SESSION_HEADER} (one conversation).", param="n")
        last = params.messages[-1]
        if last.role != "user":
            raise APIError(
                400, f"With {SESSION_HEADER} the last message must be the new user message.", param="messages"
            )
        if last.images:
            raise APIError(
                400,
                f"Images are not supported in {SESSION_HEADER} turns; send them without a session.",
                param="messages",
            )
        st.sessions.check_id(session_id)
        entry, created = await st.sessions.get_or_create(session_id, params.model)
        if params.model and params.model.lower() != entry.session.model.lower() and not created:
            raise APIError(
                400,
                f"Session {entry.id!r} uses model {entry.session.model!r}, not {params.model!r}.",
                param="model",
                code="session_model_mismatch",
            )
        headers[SESSION_HEADER] = entry.id
        headers["x-cursor-session-created"] = "true" if created else "false"
        text = last.text

        def session_streams() -> list[AsyncGenerator[Event, None]]:
            return [
                st.sessions.track(
                    entry,
                    entry.session.events(
                        text,
                        timeout_s=timeout_s,
                        stop=stop,
                        max_tokens=params.max_tokens,
                        reasoning_effort=params.reasoning_effort,
                    ),
                )
            ]

        return Prepared(session_streams, entry.session.model, text, headers)

    def build() -> tuple[TurnRequest, str]:
        turn = st.client.build_request(
            params.model or None,
            params.messages,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            timeout_s=timeout_s,
            tools=params.tools,
            tool_choice=params.tool_choice,
            response_format=params.response_format,
            reasoning_effort=params.reasoning_effort,
        )
        return turn, "".join(m.text for m in turn.messages)

    turn, prompt_text = await offload_if(len(params.messages) >= OFFLOAD_MESSAGES, build)

    def streams() -> list[AsyncGenerator[Event, None]]:
        return [st.client.run_request(turn, stop=stop) for _ in range(params.n)]

    prepared = Prepared(streams, turn.model, prompt_text, headers)
    forced = params.tools and (params.tool_choice == "required" or isinstance(params.tool_choice, Mapping))
    if not params.stream and (params.response_format is not None or forced):
        # The core's complete() validates response_format (one repair round, then
        # StructuredOutputError) and repairs an ignored forced tool_choice once. Streaming cannot
        # take back text already sent, so there response_format only asks for JSON (README).

        async def one() -> RunResult:
            result = await st.client.complete(
                params.model or None,
                params.messages,
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                stop=stop,
                timeout_s=timeout_s,
                tools=params.tools,
                tool_choice=params.tool_choice,
                response_format=params.response_format,
                reasoning_effort=params.reasoning_effort,
            )
            return from_completion(result)

        async def complete() -> list[RunResult]:
            return list(await asyncio.gather(*(one() for _ in range(params.n))))

        prepared.complete = complete
    return prepared


async def chat_completions(request: Request, st: ServerState) -> Response:
    """Handle one chat completion request."""
    # The body is read inside the gate (issue 12): a flood of huge or slow bodies queues for a
    # slot instead of all being held in memory at once.
    await st.gate.acquire()
    held = 1
    handed_off = False
    try:
        raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
        params = await parse_body(raw, lambda body: parse_chat(body, strict=st.config.strict_params))
        if params.user:
            log.debug("chat request for user %s", redact(params.user))
        if params.n > 1:  # n runs upstream take n slots
            st.gate.release(held)
            held = 0
            await st.gate.acquire(params.n)
            held = params.n
        prepared = await _prepare(request, st, params)
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        started = time.perf_counter()
        if prepared.complete is not None:
            try:
                done = await run_until_disconnect(request, prepared.complete())
            except Exception as exc:
                st.metrics.observe_error(describe(exc).code)
                raise
            if done is None:
                raise ClientGone
            return _completion(st, done, params, prepared, cid=cid, created=created)
        fanout = Fanout(prepared.streams())
        if params.stream:
            try:
                primed = await run_until_disconnect(request, primed_stream(fanout, st.keepalive_s))
            except BaseException as exc:
                await fanout.aclose()
                if isinstance(exc, Exception):
                    st.metrics.observe_error(describe(exc).code)
                raise
            if primed is None:
                await fanout.aclose()
                raise ClientGone
            info = fanout.peek_info()
            model = info.model if info is not None and info.model else prepared.model
            body_gen = _stream(
                st, fanout, params, prepared, cid=cid, created=created, model=model, started=started
            )

            async def on_close() -> None:
                await fanout.aclose()
                st.gate.release(held)

            handed_off = True
            return EventStreamResponse(
                body_gen,
                headers=prepared.headers,
                on_close=on_close,
                ending=st.streams_ending,
                farewell=lambda err: sse(_dumps(err.body())) + sse("[DONE]"),
            )
        try:
            results = await run_until_disconnect(request, collect(fanout))
        except Exception as exc:
            st.metrics.observe_error(describe(exc).code)
            raise
        finally:
            await fanout.aclose()
        if results is None:
            raise ClientGone
        return _completion(st, results, params, prepared, cid=cid, created=created)
    finally:
        if not handed_off:
            st.gate.release(held)


def _completion(
    st: ServerState,
    results: list[RunResult],
    params: ChatParams,
    prepared: Prepared,
    *,
    cid: str,
    created: int,
) -> JSONResponse:
    choices = []
    invalid = dropped = 0
    for i, r in enumerate(results):
        text = "".join(r.text)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if r.thinking:
            message["reasoning_content"] = "".join(r.thinking)
        calls = r.calls(params.parallel_tool_calls)
        dropped += len(r.tool_calls) - len(calls)
        if calls:
            message["tool_calls"] = calls
            message["content"] = text or None  # OpenAI: null when the answer is only calls
        if r.invalid_calls:
            # Non-standard, documented (README): calls the model made that cannot be run.
            message["cursorpipe_invalid_tool_calls"] = r.invalid_calls
            invalid += len(r.invalid_calls)
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": r.honest_finish()})
    usage = total_usage(results, prepared.prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    info = results[0].info
    headers = dict(prepared.headers)
    if info is not None:
        headers["x-cursorpipe-transport"] = info.transport
    headers["x-cursorpipe-usage-estimated"] = "true" if usage.estimated else "false"
    if invalid:
        headers[INVALID_CALLS_HEADER] = str(invalid)
    if dropped:
        headers[DROPPED_CALLS_HEADER] = str(dropped)
    payload = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": info.model if info is not None and info.model else prepared.model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage_json(usage),
    }
    return JSONResponse(payload, headers=headers)


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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def _stream(
    st: ServerState,
    fanout: Fanout,
    params: ChatParams,
    prepared: Prepared,
    *,
    cid: str,
    created: int,
    model: str,
    started: float,
) -> AsyncGenerator[bytes, None]:
    include_usage = params.include_usage

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            obj["usage"] = usage  # null on every chunk but the last (integrations.md §4.2)
        return sse(_dumps(obj))

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    def final(index: int) -> bytes:
        r = results[index]
        out = choice(index, {}, r.honest_finish())
        if r.invalid_calls:
            out["cursorpipe_invalid_tool_calls"] = r.invalid_calls  # non-standard (README)
        return chunk([out])

    n = fanout.size
    results = [RunResult() for _ in range(n)]
    # Tool-call fragments wait for their complete ToolCallEvent: only then is it known whether the
    # call is valid (an invalid one must never reach the client as a tool call it would run).
    pending: list[dict[int, list[ToolCallDelta]]] = [{} for _ in range(n)]
    emitted: list[int] = [0] * n
    finished: set[int] = set()
    first_output = True
    for i in range(n):
        yield chunk([choice(i, {"role": "assistant", "content": ""})])
    ended = 0
    while ended < n:
        item = await fanout.next(st.keepalive_s)
        if item is None:
            yield keepalive()
            continue
        index, value = item
        if isinstance(value, Exception):
            err = describe(value)
            st.metrics.observe_error(err.code)
            st.note_failure(value)
            log.warning("stream %s failed mid-way: %s", cid, redact(err.message))
            # vLLM's convention (§4.2): an error event, then [DONE]; the OpenAI SDK raises on it.
            yield sse(_dumps(error_body(value)))
            yield sse("[DONE]")
            return
        if isinstance(value, End):
            ended += 1
            if index not in finished:
                finished.add(index)
                yield final(index)
            continue
        result = results[index]
        result.feed(value)
        if isinstance(value, TransportInfo) and value.model and index == 0:
            model = value.model  # the routed model, if it came after the first chunk
        deltas: list[dict[str, Any]] = []
        if isinstance(value, TextDelta) and not value.notice and value.text:
            deltas.append({"content": value.text})
        elif isinstance(value, ThinkingDelta) and value.text:
            deltas.append({"reasoning_content": value.text})
        elif isinstance(value, ToolCallDelta):
            pending[index].setdefault(value.index, []).append(value)
        elif isinstance(value, ToolCallEvent):
            fragments = pending[index].pop(value.index, [])
            # Handled calls were answered inside the turn; invalid ones go on the final chunk.
            runnable = not value.handled and value.error is None
            if runnable and not params.parallel_tool_calls and emitted[index] >= 1:
                runnable = False
                log.info("stream %s: parallel_tool_calls=false; dropped call %s", cid, value.call.name)
            if runnable:
                deltas.extend(_call_deltas(value, fragments, emitted[index]))
                emitted[index] += 1
        elif isinstance(value, TurnEnd):
            if not params.parallel_tool_calls:
                # keep only the first call so honest_finish and the accumulated result agree
                result.tool_calls = dict(list(sorted(result.tool_calls.items()))[:1])
            finished.add(index)
            yield final(index)
        for delta in deltas:
            if first_output:
                first_output = False
                st.metrics.observe_ttft("chat.completions", time.perf_counter() - started)
            yield chunk([choice(index, delta)])
    usage = total_usage(results, prepared.prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    if include_usage:
        yield chunk([], usage_json(usage))
    yield sse("[DONE]")
