"""``POST /v1/chat/completions``: streaming exactly as OpenAI does it (integrations.md §4.2) and
not, ``n`` parallel runs, stop/max_tokens enforced by the client's OutputLimiter, sessions via
``X-Cursor-Session-ID``."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
    UsageEvent,
    estimate_tokens,
)
from ._errors import APIError, describe, error_body
from ._requests import IGNORED_HEADER, ChatParams, parse_chat, parse_json_object
from ._runs import End, EventStreamResponse, Fanout, keepalive, run_until_disconnect, sse
from ._sessions import SESSION_HEADER
from ._state import ServerState, request_timeout

__all__ = ["ClientGone", "RunResult", "chat_completions", "finish_reason", "primed_stream", "usage_json"]

log = logging.getLogger("cursorpipe.server")

_FINISH = {"stop", "length", "tool_calls", "content_filter"}


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

    connect.md §7 reports input, output, cache-read and cache-write tokens separately and leaves
    the total convention open [G]; OpenAI's ``prompt_tokens`` includes cached tokens, so they are
    added here and ``cached_tokens`` says how many of them were cache reads.
    """
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


@dataclass
class RunResult:
    """What one run produced."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
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
        elif isinstance(event, ToolCallDelta):
            call = self.tool_calls.setdefault(
                event.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = event.id or call["id"]
            call["function"]["name"] = event.name or call["function"]["name"]
            call["function"]["arguments"] += event.arguments_delta
        elif isinstance(event, ToolCallEvent):
            self.tool_calls[event.index] = {
                "id": event.call.id,
                "type": "function",
                "function": {"name": event.call.name, "arguments": event.call.arguments},
            }
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, TurnEnd):
            self.finish = finish_reason(event.stop_reason)
            self.usage = event.usage or self.usage
        elif isinstance(event, TransportInfo):
            self.info = event


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


async def _prepare(request: Request, st: ServerState, params: ChatParams) -> Prepared:
    headers: dict[str, str] = {}
    if params.ignored:
        headers[IGNORED_HEADER] = ", ".join(params.ignored)
    timeout_s = request_timeout(request)
    session_id = request.headers.get(SESSION_HEADER)
    stop = params.stop or None
    if session_id is not None:
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
                    entry.session.events(text, timeout_s=timeout_s, stop=stop, max_tokens=params.max_tokens),
                )
            ]

        return Prepared(session_streams, entry.session.model, text, headers)

    turn = st.client.build_request(
        params.model or None,
        params.messages,
        temperature=params.temperature,
        max_tokens=params.max_tokens,
        timeout_s=timeout_s,
    )

    def streams() -> list[AsyncGenerator[Event, None]]:
        return [st.client.run_request(turn, stop=stop) for _ in range(params.n)]

    return Prepared(streams, turn.model, "".join(m.text for m in turn.messages), headers)


async def chat_completions(request: Request, st: ServerState) -> Response:
    """Handle one chat completion request."""
    body = parse_json_object(await request.body())
    params = parse_chat(body, strict=st.config.strict_params)
    if params.user:
        log.debug("chat request for user %s", redact(params.user))
    await st.gate.acquire()
    handed_off = False
    try:
        prepared = await _prepare(request, st, params)
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        started = time.perf_counter()
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
                st.gate.release()

            handed_off = True
            return EventStreamResponse(body_gen, headers=prepared.headers, on_close=on_close)
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
            st.gate.release()


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
    for i, r in enumerate(results):
        text = "".join(r.text)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if r.thinking:
            message["reasoning_content"] = "".join(r.thinking)
        if r.tool_calls:
            message["tool_calls"] = [r.tool_calls[k] for k in sorted(r.tool_calls)]
            message["content"] = text or None
        choices.append(
            {"index": i, "message": message, "logprobs": None, "finish_reason": r.finish or "stop"}
        )
    usage = total_usage(results, prepared.prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    info = results[0].info
    headers = dict(prepared.headers)
    if info is not None:
        headers["x-cursorpipe-transport"] = info.transport
    headers["x-cursorpipe-usage-estimated"] = "true" if usage.estimated else "false"
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

    n = fanout.size
    results = [RunResult() for _ in range(n)]
    streamed_tools: list[set[int]] = [set() for _ in range(n)]
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
            log.warning("stream %s failed mid-way: %s", cid, redact(err.message))
            # vLLM's convention (§4.2): an error event, then [DONE]; the OpenAI SDK raises on it.
            yield sse(_dumps(error_body(value)))
            yield sse("[DONE]")
            return
        if isinstance(value, End):
            ended += 1
            if index not in finished:
                finished.add(index)
                yield chunk([choice(index, {}, results[index].finish or "stop")])
            continue
        result = results[index]
        result.feed(value)
        delta: dict[str, Any] | None = None
        if isinstance(value, TextDelta) and not value.notice and value.text:
            delta = {"content": value.text}
        elif isinstance(value, ThinkingDelta) and value.text:
            delta = {"reasoning_content": value.text}
        elif isinstance(value, ToolCallDelta):
            streamed_tools[index].add(value.index)
            fn: dict[str, Any] = {"arguments": value.arguments_delta}
            call: dict[str, Any] = {"index": value.index, "function": fn}
            if value.id is not None:
                call["id"] = value.id
                call["type"] = "function"
            if value.name is not None:
                fn["name"] = value.name
            delta = {"tool_calls": [call]}
        elif isinstance(value, ToolCallEvent) and value.index not in streamed_tools[index]:
            streamed_tools[index].add(value.index)
            delta = {
                "tool_calls": [
                    {
                        "index": value.index,
                        "id": value.call.id,
                        "type": "function",
                        "function": {"name": value.call.name, "arguments": value.call.arguments},
                    }
                ]
            }
        elif isinstance(value, TurnEnd):
            finished.add(index)
            yield chunk([choice(index, {}, result.finish or "stop")])
        if delta is not None:
            if first_output:
                first_output = False
                st.metrics.observe_ttft("chat.completions", time.perf_counter() - started)
            yield chunk([choice(index, delta)])
    usage = total_usage(results, prepared.prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    if include_usage:
        yield chunk([], usage_json(usage))
    yield sse("[DONE]")
