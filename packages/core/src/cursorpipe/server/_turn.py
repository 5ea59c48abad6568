"""The one turn loop every generation route runs (chat completions, Responses, and any further wire
format): request -> plan (session turn or built request, ``n`` runs) -> events -> the route's
:class:`~._wire.Renderer` -> SSE frames or a JSON body. ``_wire.py`` describes the contract.

Concerns live here once: the concurrency gate (the body is read inside it, issue 12), parsing off
the loop for large bodies, sessions, the first-output wait that turns early failures into real
HTTP statuses, keep-alives, disconnects (the run is cancelled at once, integrations.md §4.4),
folding each run with the core's :class:`TurnAccumulator`, usage totals, error metrics and health.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from .._fold import TurnAccumulator
from .._redact import redact
from ..client import CursorClient
from ..types import (
    Event,
    TextDelta,
    ThinkingDelta,
    ToolCallEvent,
    TurnRequest,
    Usage,
    estimate_tokens,
)
from ._body import OFFLOAD_MESSAGES, header, offload_if, parse_body, read_body
from ._errors import APIError, ClientGone, describe
from ._fanout import ON_GONE_KEY, End, Fanout, Gone
from ._gateway._callers import Caller, caller_of
from ._gateway._sessions import session_turn
from ._json import FastJSONResponse
from ._requests import IGNORED_HEADER, TurnSpec
from ._sessions import SESSION_HEADER
from ._sse import EventStreamResponse, Last
from ._state import ServerState, request_timeout
from ._wire import Renderer, WireFormat

__all__ = ["ERROR_SHAPE_KEY", "serve_turn", "total_usage"]

log = logging.getLogger("cursorpipe.server")

#: Where the route's error shape is kept in the request scope's state, for the exception handler.
ERROR_SHAPE_KEY = "cursorpipe_error_shape"
#: Events whose frames count as the first output for the time-to-first-token metric.
_OUTPUT = (TextDelta, ThinkingDelta, ToolCallEvent)
_SESSION_NAME = SESSION_HEADER.lower().encode()


@dataclass(slots=True)
class Plan:
    """A request ready to run: its event streams (one per choice), the model asked for, the prompt
    text (for a usage estimate) and response headers known before running."""

    streams: Callable[[], list[AsyncGenerator[Event, None]]]
    model: str
    prompt_text: str
    headers: dict[str, str]


async def serve_turn(request: Request, st: ServerState, fmt: WireFormat) -> Response:
    """Answer one generation request in ``fmt``'s wire format."""
    request.scope.setdefault("state", {})[ERROR_SHAPE_KEY] = fmt.error_body
    # The body is read inside the gate (issue 12): a flood of huge or slow bodies queues for a
    # slot instead of all being held in memory at once.
    await st.gate.acquire()
    held = 1
    handed_off = False
    try:
        raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
        renderer = await parse_body(raw, lambda body: fmt.parse(body, strict=st.config.strict_params))
        spec = renderer.spec
        if spec.user:
            log.debug("%s request for user %s", fmt.endpoint, redact(spec.user))
        if spec.n > 1:  # n runs upstream take n slots
            st.gate.release(held)
            held = 0
            await st.gate.acquire(spec.n)
            held = spec.n
        plan = await _plan(request, st, spec, sessions=fmt.sessions)
        if fmt.stage is not None:
            streams, stage = plan.streams, fmt.stage
            plan.streams = lambda: [stage(renderer, s) for s in streams()]
        if not spec.stream:
            return await _answer(request, st, renderer, plan)
        weight = held

        async def release() -> None:
            st.gate.release(weight)

        response = await _stream_response(request, st, fmt.endpoint, renderer, plan, release)
        handed_off = True
        return response
    finally:
        if not handed_off:
            st.gate.release(held)


# -- planning ----------------------------------------------------------------------------------
async def _plan(request: Request, st: ServerState, spec: TurnSpec, *, sessions: bool) -> Plan:
    headers: dict[str, str] = {}
    if spec.ignored:
        headers[IGNORED_HEADER] = ", ".join(spec.ignored)
    session_id = header(request, _SESSION_NAME) if sessions else None
    caller = caller_of(request.scope)
    if session_id is not None and st.gateway is not None:
        return await _shared_session_plan(st, caller, spec, session_id, request_timeout(request), headers)
    if session_id is not None:
        return await _session_plan(st, spec, session_id, request_timeout(request), headers)
    timeout_s = request_timeout(request)
    on_client = _caller_runs(st, caller)

    def build() -> tuple[TurnRequest, str]:
        turn = st.client.build_request(
            spec.model or None,
            spec.messages,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            timeout_s=timeout_s,
            tools=spec.tools,
            tool_choice=spec.tool_choice,
            response_format=spec.response_format,
            reasoning_effort=spec.reasoning_effort,
        )
        return turn, "".join(m.text for m in turn.messages)

    turn, prompt_text = await offload_if(len(spec.messages) >= OFFLOAD_MESSAGES, build)
    stop = spec.stop or None
    forced = spec.tools and (spec.tool_choice == "required" or isinstance(spec.tool_choice, Mapping))
    if not spec.stream and (spec.response_format is not None or forced):
        # The core validates response_format (one repair round, then StructuredOutputError) and
        # repairs an ignored forced tool_choice once. Streaming cannot take back text already
        # sent, so there response_format only asks for JSON (README).
        def streams() -> list[AsyncGenerator[Event, None]]:
            return [on_client(lambda c: validated_events(c, turn, spec)) for _ in range(spec.n)]

    else:

        def streams() -> list[AsyncGenerator[Event, None]]:
            return [on_client(lambda c: c.run_request(turn, stop=stop)) for _ in range(spec.n)]

    return Plan(streams, turn.model, prompt_text, headers)


def _caller_runs(
    st: ServerState, caller: Caller
) -> Callable[[Callable[[CursorClient], AsyncGenerator[Event, None]]], AsyncGenerator[Event, None]]:
    """How a stateless run reaches a client: the server's own, or in passthrough mode the caller's,
    inside the caller's limits (issue 17)."""
    gateway = st.gateway
    if gateway is None or not gateway.passthrough:
        return lambda make: make(st.client)
    return lambda make: gateway.events(caller, make)


def _session_text(spec: TurnSpec) -> str:
    """The new user message of a session turn (400 for what a session turn cannot carry)."""
    if spec.tools or spec.response_format is not None:
        # A session turn sends only the new user text (session.py); its tools would have to be
        # fixed when the session opens, which this endpoint does not model.
        raise APIError(
            400,
            f"tools and response_format are not supported with {SESSION_HEADER}; "
            "send the whole conversation without a session instead.",
            param="tools" if spec.tools else "response_format",
        )
    if spec.n != 1:
        raise APIError(400, f"n must be 1 with {SESSION_HEADER} (one conversation).", param="n")
    last = spec.messages[-1]
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
    return last.text


def _session_system(spec: TurnSpec) -> str | None:
    """The request's system prompt for a session turn. It is sent with every turn that carries it:
    whether Cursor keeps a system prompt across a conversation's turns is not documented
    (connect.md §5.3), so the session docstring asks for it on each turn it should govern."""
    return "\n\n".join(m.text for m in spec.messages if m.role == "system" and m.text.strip()) or None


def _session_headers(
    headers: dict[str, str], session_id: str, model: str, spec: TurnSpec, created: bool
) -> None:
    if spec.model and spec.model.lower() != model.lower() and not created:
        raise APIError(
            400,
            f"Session {session_id!r} uses model {model!r}, not {spec.model!r}.",
            param="model",
            code="session_model_mismatch",
        )
    headers[SESSION_HEADER] = session_id
    headers["x-cursor-session-created"] = "true" if created else "false"


async def _session_plan(
    st: ServerState, spec: TurnSpec, session_id: str, timeout_s: float | None, headers: dict[str, str]
) -> Plan:
    text, system = _session_text(spec), _session_system(spec)
    st.sessions.check_id(session_id)
    entry, created = await st.sessions.get_or_create(session_id, spec.model)
    _session_headers(headers, entry.id, entry.session.model, spec, created)

    def streams() -> list[AsyncGenerator[Event, None]]:
        turn = entry.session.events(
            text,
            system=system,
            timeout_s=timeout_s,
            stop=spec.stop or None,
            max_tokens=spec.max_tokens,
            reasoning_effort=spec.reasoning_effort,
        )
        return [st.sessions.track(entry, turn)]

    return Plan(streams, entry.session.model, text, headers)


async def _shared_session_plan(
    st: ServerState,
    caller: Caller,
    spec: TurnSpec,
    session_id: str,
    timeout_s: float | None,
    headers: dict[str, str],
) -> Plan:
    """A session turn on the gateway's store: any replica, the caller's own session (issue 17)."""
    gateway = st.gateway
    assert gateway is not None
    text = _session_text(spec)
    st.sessions.check_id(session_id)
    record, created = await gateway.sessions.get_or_create(caller, session_id, spec.model)
    _session_headers(headers, record.id, record.model, spec, created)
    run = session_turn(
        text,
        system=_session_system(spec),
        timeout_s=timeout_s,
        stop=spec.stop or None,
        max_tokens=spec.max_tokens,
        reasoning_effort=spec.reasoning_effort,
    )

    def streams() -> list[AsyncGenerator[Event, None]]:
        return [gateway.sessions.turn(caller, session_id, run)]

    return Plan(streams, record.model, text, headers)


def validated_events(client: CursorClient, turn: TurnRequest, spec: TurnSpec) -> AsyncGenerator[Event, None]:
    """The events of a validated turn (``response_format`` checked and repaired once, a forced
    ``tool_choice`` repaired once): the core's validating stage yields only the accepted round's
    events, and a :class:`ParsedOutput` before ``TurnEnd``. The request is the one the plan built."""
    return client.run_request(turn, stop=spec.stop or None, validate=True)


# -- running -----------------------------------------------------------------------------------
def total_usage(runs: Sequence[TurnAccumulator], prompt_text: str) -> Usage:
    """Usage of all runs: the prompt once (every run saw the same prompt), completions summed;
    estimated from the text where a transport reported none."""
    usages = [r.usage or Usage(output_tokens=estimate_tokens(r.text), estimated=True) for r in runs]
    first = usages[0]
    if first.input_tokens == 0 and first.estimated:
        first = Usage(
            input_tokens=estimate_tokens(prompt_text), output_tokens=first.output_tokens, estimated=True
        )
    if len(usages) == 1:
        return first
    return Usage(
        input_tokens=first.input_tokens,
        cache_read_tokens=first.cache_read_tokens,
        cache_write_tokens=first.cache_write_tokens,
        output_tokens=sum(u.output_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
    )


async def _collect(fanout: Fanout) -> list[TurnAccumulator]:
    """Read every run to its end (non-streaming answers); the first failure is raised, and
    :class:`ClientGone` when the client disconnected first."""
    runs = [TurnAccumulator() for _ in range(fanout.size)]
    ended = 0
    while ended < fanout.size:
        item = await fanout.next()
        assert item is not None  # no timeout given
        index, value = item
        if isinstance(value, Gone):
            log.info("client disconnected; cancelled the run")
            raise ClientGone
        if isinstance(value, Exception):
            raise value
        if isinstance(value, End):
            ended += 1
        else:
            runs[index].feed(value)
    return runs


def _observe_usage(st: ServerState, runs: Sequence[TurnAccumulator], plan: Plan) -> Usage:
    """Token metrics for the finished runs; server notices (quota, model substitution) are not
    model output, so they go to the log instead of the answer."""
    for run in runs:
        for notice in run.notices:
            log.info("cursor notice: %s", redact(notice))
    usage = total_usage(runs, plan.prompt_text)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    return usage


async def _collect_one(stream: AsyncGenerator[Event, None], request: Request) -> TurnAccumulator:
    """Read one run to its end in this task (a non-streaming answer with one choice): no pump
    task or queue (issue 16). When the client goes away this task is cancelled, which closes the
    run (and so cancels the upstream turn, integrations.md §4.4): told by the connection itself
    where the server's own HTTP protocol offers it (``ON_GONE_KEY``), else by a watcher task
    waiting on ``receive()``."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def on_gone() -> None:
        nonlocal gone
        gone = True
        task.cancel()

    hooks: list[Callable[[], None]] | None = request.scope.get(ON_GONE_KEY)
    watcher: asyncio.Task[None] | None = None
    if hooks is not None:
        hooks.append(on_gone)
    else:
        receive = request.receive

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            on_gone()

        watcher = asyncio.create_task(watch())
    run = TurnAccumulator()
    try:
        async with aclosing(stream) as events:
            async for event in events:
                run.feed(event)
    except asyncio.CancelledError:
        # Ours (the client left) unless this task was cancelled from outside too.
        if gone and task.uncancel() == 0:
            log.info("client disconnected; cancelled the run")
            raise ClientGone from None
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        elif not gone:
            hooks.remove(on_gone)  # type: ignore[union-attr]
    return run


async def _collect_all(request: Request, streams: list[AsyncGenerator[Event, None]]) -> list[TurnAccumulator]:
    if len(streams) == 1:
        return [await _collect_one(streams[0], request)]
    fanout = Fanout(streams)
    fanout.watch(request.receive, request.scope.get(ON_GONE_KEY))
    try:
        return await _collect(fanout)
    finally:
        await fanout.aclose()


async def _answer(request: Request, st: ServerState, renderer: Renderer, plan: Plan) -> Response:
    try:
        runs = await _collect_all(request, plan.streams())
    except ClientGone:
        raise
    except Exception as exc:
        st.metrics.observe_error(describe(exc).code)
        raise
    usage = _observe_usage(st, runs, plan)
    info = runs[0].info
    model = info.model if info is not None and info.model else plan.model
    payload, own = renderer.body(runs, usage, model)
    headers = {**plan.headers, **own}
    if info is not None:
        headers["x-cursorpipe-transport"] = info.transport
    headers["x-cursorpipe-usage-estimated"] = "true" if usage.estimated else "false"
    return FastJSONResponse(payload, headers=headers)


async def _stream_response(
    request: Request,
    st: ServerState,
    endpoint: str,
    renderer: Renderer,
    plan: Plan,
    release: Callable[[], Awaitable[None]],
) -> Response:
    started = time.perf_counter()
    fanout = Fanout(plan.streams())
    fanout.watch(request.receive, request.scope.get(ON_GONE_KEY))
    try:
        primed = await fanout.prime(st.keepalive_s)
    except BaseException as exc:
        await fanout.aclose()
        if isinstance(exc, Exception):
            st.metrics.observe_error(describe(exc).code)
        raise
    if not primed:
        await fanout.aclose()
        log.info("client disconnected; cancelled the run")
        raise ClientGone
    info = fanout.peek_info()
    model = info.model if info is not None and info.model else plan.model

    async def on_close() -> None:
        await fanout.aclose()
        await release()

    body = _frames(st, fanout, renderer, plan, endpoint=endpoint, model=model, started=started)
    # The fanout's watcher sees the disconnect (the body stops at GONE): no second watcher.
    return EventStreamResponse(
        body,
        headers=plan.headers,
        on_close=on_close,
        ending=st.streams_ending,
        farewell=renderer.fail,
        watch=False,
    )


async def _frames(
    st: ServerState,
    fanout: Fanout,
    renderer: Renderer,
    plan: Plan,
    *,
    endpoint: str,
    model: str,
    started: float,
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes. Events already waiting are rendered into one write: fewer ASGI sends
    and socket writes per answer (issue 16), and nothing ready is ever held back."""
    runs = [TurnAccumulator() for _ in range(fanout.size)]
    parts = [renderer.open(model)]
    state = _StreamState(fanout.size)
    while state.ended < fanout.size:
        item = fanout.ready()
        if item is None:
            if any(parts):
                yield b"".join(parts)
            parts = []
            item = await fanout.next(st.keepalive_s)
            if item is None:
                yield renderer.keepalive
                continue
        index, value = item
        if isinstance(value, Gone):
            log.info("client disconnected mid-stream; cancelling the run")
            return
        if isinstance(value, Exception):
            err = describe(value)
            st.metrics.observe_error(err.code)
            st.note_failure(value)
            log.warning("%s stream failed mid-way: %s", endpoint, redact(err.message))
            parts.append(renderer.fail(err))
            yield b"".join(parts)
            return
        parts.append(_render(st, renderer, runs[index], index, value, state, endpoint, started))
    parts.append(renderer.close(runs, _observe_usage(st, runs, plan)))
    yield Last(b"".join(parts))


class _StreamState:
    __slots__ = ("ended", "waiting_first")

    def __init__(self, size: int) -> None:
        self.ended = 0
        self.waiting_first = True


def _render(
    st: ServerState,
    renderer: Renderer,
    run: TurnAccumulator,
    index: int,
    value: Event | End,
    state: _StreamState,
    endpoint: str,
    started: float,
) -> bytes:
    if isinstance(value, End):
        state.ended += 1
        return renderer.run_end(index, run)
    run.feed(value)
    out = renderer.event(index, value, run)
    if state.waiting_first and out and isinstance(value, _OUTPUT):
        state.waiting_first = False
        st.metrics.observe_ttft(endpoint, time.perf_counter() - started)
    return out
