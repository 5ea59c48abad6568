"""The Anthropic routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and the
Anthropic models listing (docs/anthropic.md). Same backends, gate, limits, sessions and error
mapping as the OpenAI routes; only the wire format differs."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..._fold import TurnAccumulator
from ..._redact import redact
from ...types import Event, estimate_tokens
from .._body import OFFLOAD_MESSAGES, offload_if, parse_body, read_body
from .._chat import ClientGone
from .._errors import APIError, describe
from .._requests import IGNORED_HEADER
from .._runs import End, EventStreamResponse, Fanout, run_until_disconnect
from .._sessions import SESSION_HEADER
from .._state import ServerState, get_state, request_timeout
from ._errors import error_frame
from ._models import ANTHROPIC_VERSION_HEADER, model_json, models_page
from ._render import PING, MessageStream, message_id, message_json, turn_usage
from ._request import MessagesParams, count_tokens, parse_messages
from ._stops import StopSequences

__all__ = [
    "ANTHROPIC_PATHS",
    "anthropic_model",
    "anthropic_models",
    "is_anthropic_path",
    "router",
    "wants_anthropic",
]

log = logging.getLogger("cursorpipe.server")

#: Paths whose every answer, errors included, is in Anthropic's shape.
ANTHROPIC_PATHS = ("/v1/messages",)


def wants_anthropic(request: Request) -> bool:
    """Whether a shared route (``/v1/models``) should answer in Anthropic's shape: every Anthropic
    SDK sends ``anthropic-version``, no OpenAI client does."""
    return ANTHROPIC_VERSION_HEADER in request.headers


def is_anthropic_path(path: str) -> bool:
    """Whether every answer on ``path``, errors included, is in Anthropic's shape."""
    return path.startswith(ANTHROPIC_PATHS)


def _request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


router = APIRouter()


@dataclass
class _Turn:
    """A Messages request ready to run."""

    stream: Callable[[], AsyncGenerator[Event, None]]
    model: str
    prompt_tokens: int
    stops: StopSequences
    headers: dict[str, str]


async def _session_turn(
    request: Request, st: ServerState, params: MessagesParams, headers: dict[str, str]
) -> _Turn:
    """A turn of a server session: Cursor keeps the history, so only the new user message is
    sent (the system prompt goes with every turn, as Anthropic clients send it every time)."""
    session_id = request.headers[SESSION_HEADER]
    if params.tools or params.response_format is not None:
        raise APIError(
            400,
            f"tools and output_config.format are not supported with {SESSION_HEADER}; "
            "send the whole conversation without a session instead.",
            param="tools" if params.tools else "output_config.format",
        )
    last = params.messages[-1]
    if last.role != "user" or last.images or not last.text:
        raise APIError(
            400,
            f"With {SESSION_HEADER} the last message must be the new user message, as text.",
            param="messages",
        )
    st.sessions.check_id(session_id)
    entry, created = await st.sessions.get_or_create(session_id, params.model)
    if params.model.lower() != entry.session.model.lower() and not created:
        raise APIError(
            400,
            f"Session {entry.id!r} uses model {entry.session.model!r}, not {params.model!r}.",
            param="model",
            code="session_model_mismatch",
        )
    headers[SESSION_HEADER] = entry.id
    headers["x-cursor-session-created"] = "true" if created else "false"
    system = "\n\n".join(m.text for m in params.messages if m.role == "system") or None
    prompt_tokens = estimate_tokens((system or "") + last.text)
    stops = StopSequences(params.stop_sequences, prompt_tokens)
    timeout_s = request_timeout(request)

    def stream() -> AsyncGenerator[Event, None]:
        events = entry.session.events(
            last.text,
            system=system,
            timeout_s=timeout_s,
            max_tokens=params.max_tokens,
            reasoning_effort=params.reasoning_effort,
        )
        return stops.apply(st.sessions.track(entry, events))

    return _Turn(stream, entry.session.model, prompt_tokens, stops, headers)


async def _prepare(request: Request, st: ServerState, params: MessagesParams) -> _Turn:
    headers: dict[str, str] = {}
    if params.ignored:
        headers[IGNORED_HEADER] = ", ".join(params.ignored)
    if params.user_id:
        log.debug("messages request for user %s", redact(params.user_id))
    if request.headers.get(SESSION_HEADER) is not None:
        return await _session_turn(request, st, params, headers)
    timeout_s = request_timeout(request)

    def build() -> Any:
        return st.client.build_request(
            params.model,
            params.messages,
            temperature=None,
            max_tokens=params.max_tokens,
            timeout_s=timeout_s,
            tools=params.tools,
            tool_choice=params.tool_choice,
            response_format=params.response_format,
            reasoning_effort=params.reasoning_effort,
        )

    turn = await offload_if(len(params.messages) >= OFFLOAD_MESSAGES, build)
    prompt_tokens = estimate_tokens("".join(m.text for m in turn.messages))
    stops = StopSequences(params.stop_sequences, prompt_tokens)

    def stream() -> AsyncGenerator[Event, None]:
        return stops.apply(st.client.run_request(turn))

    return _Turn(stream, turn.model, prompt_tokens, stops, headers)


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    """Anthropic Messages API (streaming and not)."""
    st = get_state(request)
    await st.gate.acquire()
    handed_off = False
    try:
        raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
        params = await parse_body(raw, lambda body: parse_messages(body, strict=st.config.strict_params))
        turn = await _prepare(request, st, params)
        rid = _request_id(request)
        if rid:
            turn.headers["request-id"] = rid
        if params.stream:
            response = await _streamed(request, st, params, turn)
            handed_off = True
            return response
        return await _complete(request, st, params, turn)
    finally:
        if not handed_off:
            st.gate.release()


async def _complete(request: Request, st: ServerState, params: MessagesParams, turn: _Turn) -> JSONResponse:
    async def collect() -> TurnAccumulator:
        acc = TurnAccumulator()
        async with aclosing(turn.stream()) as events:
            async for event in events:
                acc.feed(event)
        return acc

    try:
        acc = await run_until_disconnect(request, collect())
    except Exception as exc:
        st.metrics.observe_error(describe(exc).code)
        raise
    if acc is None:
        raise ClientGone
    usage = turn_usage(acc, turn.prompt_tokens)
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)
    info = acc.info
    body = message_json(
        acc,
        msg_id=message_id(),
        model=info.model if info is not None and info.model else turn.model,
        usage=usage,
        parallel=params.parallel_tool_calls,
        stop_sequence=turn.stops.matched,
    )
    headers = dict(turn.headers)
    if info is not None:
        headers["x-cursorpipe-transport"] = info.transport
    headers["x-cursorpipe-usage-estimated"] = "true" if usage.estimated else "false"
    return JSONResponse(body, headers=headers)


async def _streamed(request: Request, st: ServerState, params: MessagesParams, turn: _Turn) -> Response:
    fanout = Fanout([turn.stream()])
    try:
        await fanout.prime(st.keepalive_s)
    except BaseException as exc:
        await fanout.aclose()
        if isinstance(exc, Exception):
            st.metrics.observe_error(describe(exc).code)
        raise
    info = fanout.peek_info()
    renderer = MessageStream(
        msg_id=message_id(),
        model=info.model if info is not None and info.model else turn.model,
        prompt_tokens=turn.prompt_tokens,
        parallel=params.parallel_tool_calls,
        stop_sequence=lambda: turn.stops.matched,
        request_id=turn.headers.get("request-id"),
    )

    async def on_close() -> None:
        await fanout.aclose()
        st.gate.release()

    return EventStreamResponse(
        _frames(st, fanout, renderer),
        headers=turn.headers,
        on_close=on_close,
        ending=st.streams_ending,
        farewell=lambda err: error_frame(err, turn.headers.get("request-id")),
    )


async def _frames(st: ServerState, fanout: Fanout, renderer: MessageStream) -> AsyncGenerator[bytes, None]:
    started = time.perf_counter()
    yield renderer.start()
    while not renderer.finished:
        item = await fanout.next(st.keepalive_s)
        if item is None:
            yield PING
            continue
        _, value = item
        if isinstance(value, Exception):
            err = describe(value)
            st.metrics.observe_error(err.code)
            st.note_failure(value)
            log.warning("stream %s failed mid-way: %s", renderer.msg_id, redact(err.message))
            yield renderer.error(value)
            return
        produced = renderer.produced
        chunk = renderer.finish() if isinstance(value, End) else renderer.feed(value)
        if renderer.produced and not produced:
            st.metrics.observe_ttft("messages", time.perf_counter() - started)
        if chunk:
            yield chunk
    usage = renderer.usage()
    st.metrics.observe_tokens(usage.input_tokens, usage.output_tokens, usage.reasoning_tokens)


@router.post("/v1/messages/count_tokens")
async def count_message_tokens(request: Request) -> JSONResponse:
    """An estimate of a Messages request's prompt tokens (docs/anthropic.md §6)."""
    st = get_state(request)
    raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
    tokens = await parse_body(raw, count_tokens)
    return JSONResponse({"input_tokens": tokens}, headers={"x-cursorpipe-usage-estimated": "true"})


def anthropic_models(st: ServerState, models: list[Any]) -> JSONResponse:
    """``GET /v1/models`` in Anthropic's shape."""
    return JSONResponse(models_page(models, st.started_at))


def anthropic_model(st: ServerState, info: Any) -> JSONResponse:
    """``GET /v1/models/{id}`` in Anthropic's shape."""
    return JSONResponse(model_json(info, st.started_at))
