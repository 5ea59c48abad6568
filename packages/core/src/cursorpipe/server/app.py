"""``create_app``: the FastAPI application of cursorpipe-server.

Layers, outermost first: CORS (opt-in) -> the guard middleware (``_guard.py``: request ids, bearer
auth, drain, metrics, last-resort 500s in OpenAI shape) -> FastAPI's exception handlers (one
mapping, ``_errors.describe``, rendered in the route's wire format) -> the routers:
``_routes_turns`` (chat completions and Responses, both the shared turn loop of ``_turn.py``),
``_anthropic._route`` (Anthropic's Messages API, the same loop), ``_routes_models``,
``_routes_sessions`` and ``_routes_ops`` (health, metrics). The guard calls the three generation
endpoints (POST) itself, with the same exception handler, instead of going through routing
(issue 16: routing costs more than the rest of a short request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from .._constants import SERVER_KEEPALIVE_S, SERVER_SESSION_SWEEP_S
from .._redact import redact, register_secret
from ..client import CursorClient
from ..config import CursorPipeConfig
from ..errors import CursorPipeError
from . import _routes_models, _routes_ops, _routes_sessions, _routes_turns
from ._anthropic import _route as _routes_anthropic
from ._errors import APIError, ClientGone, error_response
from ._gate import Gate
from ._guard import GuardMiddleware, OpenAICORSMiddleware
from ._metrics import Metrics
from ._sessions import SessionRegistry
from ._sse import StreamEnding
from ._state import ServerState, get_state
from ._turn import ERROR_SHAPE_KEY

__all__ = ["create_app"]

log = logging.getLogger("cursorpipe.server")


def create_app(
    config: CursorPipeConfig | None = None,
    *,
    client: CursorClient | None = None,
    emulated: bool = False,
    keepalive_s: float | None = None,
) -> FastAPI:
    """Build the OpenAI-compatible app.

    Args:
        config: settings (default: from the environment and ``.env``); ignored in favour of
            ``client.config`` when a client is given.
        client: a ready :class:`CursorClient` (tests inject ``CursorClient(transport=MockTransport())``);
            the app then never closes it. Otherwise the app creates one and closes it on shutdown.
        emulated: label everything as served by the built-in Cursor API emulator.
        keepalive_s: SSE keep-alive interval (default ``SERVER_KEEPALIVE_S``).
    """
    if client is not None:
        config = client.config
    config = config if config is not None else CursorPipeConfig()
    register_secret(config.bearer_token.get_secret_value())
    owns = client is None
    client = client if client is not None else CursorClient(config)
    state = ServerState(
        config=config,
        client=client,
        owns_client=owns,
        emulated=emulated,
        keepalive_s=keepalive_s if keepalive_s is not None else SERVER_KEEPALIVE_S,
        gate=Gate(config.max_concurrency, config.queue_timeout_s),
        sessions=SessionRegistry(client, config.session_idle_s),
        metrics=Metrics({}),
    )
    state.metrics = Metrics(
        {
            "active_requests": lambda: float(state.gate.in_use),
            "sessions": lambda: float(len(state.sessions)),
            "concurrency_limit": lambda: float(state.gate.limit),
        }
    )
    if config.auth_mode == "passthrough" or config.state_url.get_secret_value():
        # Imported only when asked for: the single-process default runs none of it (issue 17).
        from ._gateway._gateway import Gateway

        registry = state.metrics.registry if state.metrics.enabled else None
        state.gateway = Gateway.from_config(config, client, metrics_registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A lifespan may run again on the same app (test clients do): each start is a fresh one.
        state.phase = "starting"
        state.gate.draining = False
        state.loop = asyncio.get_running_loop()
        state.streams_ending = StreamEnding()
        if emulated:
            log.warning(
                "cursorpipe-server: EMULATED backend (built-in Cursor API emulator); answers are fake"
            )
        warm = asyncio.create_task(_warmup(state))
        sweeper = asyncio.create_task(_sweep(state))
        try:
            yield
        finally:
            state.begin_drain()
            for task in (warm, sweeper):
                task.cancel()
            await asyncio.gather(warm, sweeper, return_exceptions=True)
            await state.sessions.close_all()
            if state.gateway is not None:
                await state.gateway.aclose()
            if state.owns_client:
                await state.client.close()
            log.info("cursorpipe-server stopped")

    app = FastAPI(
        title="cursorpipe-server",
        version=__version__,
        description="OpenAI-compatible API over the models of a Cursor subscription.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.cursorpipe = state

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientGone):
            return Response(status_code=499)
        get_state(request).note_failure(exc)
        scope_state = request.scope.get("state", {})
        return error_response(
            exc, request_id=scope_state.get("request_id"), shape=scope_state.get(ERROR_SHAPE_KEY)
        )

    handled = (APIError, CursorPipeError, StarletteHTTPException, RequestValidationError, ClientGone)
    for exc_type in handled:
        app.add_exception_handler(exc_type, handle)

    # The generation routes first: routing tries each route in turn, and these carry the load.
    for module in (_routes_turns, _routes_anthropic, _routes_ops, _routes_models, _routes_sessions):
        app.include_router(module.router)
    # The generation routes are also called by the guard directly (see GuardMiddleware): they
    # stay in the router for the OpenAPI schema and for other methods (405).
    direct = {
        "/v1/chat/completions": _routes_turns.chat,
        "/v1/responses": _routes_turns.responses,
        "/v1/messages": _routes_anthropic.create_message,
    }
    app.add_middleware(GuardMiddleware, state=state, direct=direct, on_error=handle, handled=handled)
    origins = [o.strip() for o in config.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            OpenAICORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "x-request-id",
                "x-cursorpipe-ignored-params",
                "x-cursor-session-id",
                "retry-after",
                "request-id",
            ],
        )
    return app


async def _warmup(state: ServerState) -> None:
    """Pre-warm ``pool_size`` sessions without ever failing startup (no credentials is fine:
    /health answers and requests get a clear 401)."""
    try:
        if state.gateway is not None and state.gateway.passthrough:
            # Callers bring their own keys: there is no server account to warm up.
            log.info("cursorpipe-server ready (passthrough: every request on the caller's own account)")
            return
        await state.client.warmup(state.config.pool_size)
        log.info(
            "cursorpipe-server ready (transport %s, pool %d)",
            state.client.transport_name,
            state.config.pool_size,
        )
    except asyncio.CancelledError:
        raise
    except CursorPipeError as exc:
        state.warmup_error = redact(exc.message)
        # No credentials (or a refused key) means every request will fail: health says so from
        # the start, not only after the first failed request (issue 15).
        state.note_failure(exc)
        log.warning("warm-up failed, serving anyway (requests will fail until fixed): %s", state.warmup_error)
    except Exception as exc:
        state.warmup_error = redact(f"{type(exc).__name__}: {exc}")
        log.exception("warm-up failed unexpectedly, serving anyway")
    finally:
        if state.phase == "starting":
            state.phase = "ready"


async def _sweep(state: ServerState) -> None:
    interval = min(SERVER_SESSION_SWEEP_S, max(0.05, state.config.session_idle_s / 4))
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            await state.sessions.sweep()
            if state.gateway is not None:
                await state.gateway.store.sweep()
