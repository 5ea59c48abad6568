"""``create_app``: the FastAPI application of cursorpipe-server.

Layers, outermost first: CORS (opt-in) -> the guard middleware (request ids, bearer auth, drain,
metrics, last-resort 500s in OpenAI shape) -> FastAPI's exception handlers (one mapping,
``_errors.describe``) -> routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._constants import SERVER_KEEPALIVE_S, SERVER_MODELS_CACHE_S, SERVER_SESSION_SWEEP_S
from .._redact import redact, register_secret
from ..client import CursorClient
from ..config import CursorPipeConfig
from ..errors import CursorPipeError
from ..types import ModelInfo
from ._body import read_body
from ._chat import ClientGone, chat_completions
from ._errors import APIError, error_response
from ._metrics import Metrics
from ._requests import _ChatBody, _ResponsesBody, parse_json_object
from ._responses import responses_create
from ._runs import Gate, draining_error
from ._sessions import SessionRegistry
from ._state import ServerState, get_state

__all__ = ["create_app"]

log = logging.getLogger("cursorpipe.server")

HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_RUN_PATHS = frozenset({"/v1/chat/completions", "/v1/responses"})
_KNOWN_PATHS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/models",
    "/v1/sessions",
    "/health",
    "/metrics",
)


def _metric_path(path: str) -> str:
    for known in _KNOWN_PATHS:
        if path == known:
            return known
        if path.startswith(known + "/"):
            return known + "/{id}"
    return "other"


class GuardMiddleware:
    """Request ids (echo ``X-Request-ID`` or make one), bearer auth compared in constant time
    (health and CORS preflight exempt), 503 while draining, metrics, and a last-resort OpenAI-shaped
    500 so no path ever answers in another shape."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        token = state.config.bearer_token.get_secret_value()
        self._token = token.encode() if token else None
        extra = {h.strip().lower() for h in state.config.allowed_hosts.split(",") if h.strip()}
        bind = state.config.host.strip().lower()
        if bind and bind not in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - compared, not bound
            extra.add(bind)
        self._allowed_hosts = frozenset(extra)

    def _host_allowed(self, scope: Scope) -> bool:
        """Without a bearer token anything that can make the browser send a request can spend the
        account; DNS rebinding does it under a foreign name, so only loopback names (and the
        configured ones) are served (issue 12 item 6)."""
        if self._token is not None:
            return True
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").strip().lower()
                break
        if host.startswith("["):
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        # An entry with a port allows that port only; one without allows the name on any port.
        allowed = self._allowed_hosts
        return host in allowed or name in allowed or f"[{name}]" in allowed or _loopback_name(name)

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return secrets.compare_digest(credential.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else ""
                break
        request_id = request_id or "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                if status == 200 and path in _RUN_PATHS:
                    self.state.note_success()
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        exempt = method == "OPTIONS" or path in HEALTH_PATHS
        try:
            if not exempt and not self._host_allowed(scope):
                err = APIError(
                    403,
                    "This server (no bearer token set) only answers requests addressed to a loopback "
                    "host name; add this Host to CURSORPIPE_ALLOWED_HOSTS or set CURSORPIPE_BEARER_TOKEN.",
                    type="permission_error",
                    code="host_not_allowed",
                    should_retry=False,
                )
                await error_response(err, request_id=request_id)(scope, receive, send_with_id)
            elif not exempt and not self._authorized(scope):
                err = APIError(
                    401,
                    "Missing or wrong bearer token: send 'Authorization: Bearer <CURSORPIPE_BEARER_TOKEN>'.",
                    type="authentication_error",
                    code="invalid_api_key",
                    should_retry=False,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await error_response(err, request_id=request_id)(scope, receive, send_with_id)
            elif method == "POST" and not _json_or_empty(scope):
                # A browser sends text/plain or form bodies cross-origin without a preflight (CSRF);
                # application/json always needs one, which CORS then refuses.
                err = APIError(
                    415,
                    "POST bodies must be sent with 'Content-Type: application/json'.",
                    code="unsupported_media_type",
                    should_retry=False,
                )
                await error_response(err, request_id=request_id)(scope, receive, send_with_id)
            elif not exempt and self.state.phase == "draining":
                await error_response(draining_error(), request_id=request_id)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                raise
            await error_response(exc, request_id=request_id)(scope, receive, send_with_id)
        finally:
            self.state.metrics.observe_request(
                _metric_path(path), method, status, time.perf_counter() - started
            )


class _OpenAICORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with its refusal of a preflight in OpenAI's error shape
    instead of plain text (issue 12 item 8)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        err = APIError(
            response.status_code,
            f"{reason}: this origin, method or header is not allowed (CURSORPIPE_CORS_ORIGINS).",
            type="invalid_request_error",
            code="cors_refused",
            should_retry=False,
        )
        keep = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        keep.update(err.response_headers())
        return JSONResponse(err.body(), status_code=err.status, headers=keep)


def _loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_or_empty(scope: Scope) -> bool:
    """The request declares a JSON body, or has no body at all."""
    content_type = b""
    length: bytes | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            chunked = True
    media = content_type.split(b";", 1)[0].strip().lower()
    if media == b"application/json":
        return True
    return not chunked and (length is None or length == b"0")


def _model_json(info: ModelInfo, st: ServerState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "object": "model",
        "created": int(st.started_at),
        "owned_by": st.owned_by or info.owned_by,
        "display_name": info.display_name or info.id,
        "aliases": list(info.aliases),
    }
    if info.context_window is not None:
        data["context_window"] = info.context_window
    if info.max_output_tokens is not None:
        data["max_output_tokens"] = info.max_output_tokens
    if info.supports_thinking is not None:
        data["supports_thinking"] = info.supports_thinking
    if info.supports_images is not None:
        data["supports_images"] = info.supports_images
    return data


async def _models(st: ServerState) -> list[ModelInfo]:
    now = time.monotonic()
    if st.models is not None and now - st.models_at < SERVER_MODELS_CACHE_S:
        return st.models
    models = await st.client.list_models()
    st.models, st.models_at = models, now
    return models


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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A lifespan may run again on the same app (test clients do): each start is a fresh one.
        state.phase = "starting"
        state.gate.draining = False
        state.loop = asyncio.get_running_loop()
        state.streams_ending = asyncio.Event()
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
        return error_response(exc, request_id=request.scope.get("state", {}).get("request_id"))

    for exc_type in (APIError, CursorPipeError, StarletteHTTPException, RequestValidationError, ClientGone):
        app.add_exception_handler(exc_type, handle)

    _routes(app)
    app.add_middleware(GuardMiddleware, state=state)
    origins = [o.strip() for o in config.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            _OpenAICORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "x-request-id",
                "x-cursorpipe-ignored-params",
                "x-cursor-session-id",
                "retry-after",
            ],
        )
    return app


async def _warmup(state: ServerState) -> None:
    """Pre-warm ``pool_size`` sessions without ever failing startup (no credentials is fine:
    /health answers and requests get a clear 401)."""
    try:
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


def _health(state: ServerState) -> dict[str, Any]:
    problem = state.problem()
    status = "draining" if state.phase == "draining" else "degraded" if problem else "ok"
    return {
        "status": status,
        "degraded": problem,
        "phase": state.phase,
        "emulated": state.emulated,
        "backend": "emulator" if state.emulated else state.config.backend_url,
        "strategy": state.config.strategy.value,
        "transport": state.client.transport_name,
        "credentials": state.config.has_credentials,
        "warmup_error": state.warmup_error,
        "active_requests": state.gate.in_use,
        "sessions": len(state.sessions),
        "version": __version__,
    }


_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    },
    "required": ["role"],
}


def _json_body(model: type[BaseModel], **items: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` (a real request model of ``_requests``) as the JSON
    request body, so property-based testing of the OpenAPI schema reaches the bodies. The routes
    read the body themselves (inside the concurrency gate, under the size limit), so FastAPI does
    not validate it; ``items`` gives array properties a useful item schema."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema = inline(schema)
    for name, item in items.items():
        schema["properties"][name]["items"] = item
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class _SessionBody(BaseModel):
    """``POST /v1/sessions`` body (documentation only; the route checks it by hand)."""

    model: str = ""
    id: str | None = None


def _routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """Liveness plus a summary (``status`` ``degraded`` with the reason when requests keep
        failing the same way); 503 only while draining."""
        st = get_state(request)
        return JSONResponse(_health(st), status_code=503 if st.phase == "draining" else 200)

    @app.get("/health/live")
    async def live() -> JSONResponse:
        """The process answers."""
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        """200 once warm-up finished; 503 while starting, draining or degraded (with the reason)."""
        st = get_state(request)
        problem = st.problem() if st.phase == "ready" else None
        ok = st.phase == "ready" and problem is None
        headers = {} if ok else {"Retry-After": "1"}
        body: dict[str, Any] = {"status": "ready" if ok else st.phase, "emulated": st.emulated}
        if problem is not None:
            body.update(status="degraded", degraded=problem)
        return JSONResponse(body, status_code=200 if ok else 503, headers=headers)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text (needs the ``metrics`` extra)."""
        st = get_state(request)
        if not st.metrics.enabled:
            raise APIError(
                501,
                "Metrics need prometheus-client: pip install 'cursorpipe[metrics]'.",
                type="server_error",
                code="metrics_unavailable",
                should_retry=False,
            )
        body, content_type = st.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        """The account's models (OpenAI list shape)."""
        st = get_state(request)
        models = await _models(st)
        return JSONResponse({"object": "list", "data": [_model_json(m, st) for m in models]})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> JSONResponse:
        """One model by id or alias; 404 when unknown."""
        st = get_state(request)
        for info in await _models(st):
            if info.matches(model_id):
                return JSONResponse(_model_json(info, st))
        raise APIError(
            404,
            f"The model {model_id!r} does not exist or is not available to this Cursor account.",
            param="model",
            code="model_not_found",
            type="invalid_request_error",
            should_retry=False,
        )

    @app.post("/v1/chat/completions", openapi_extra=_json_body(_ChatBody, messages=_MESSAGE_SCHEMA))
    async def chat(request: Request) -> Response:
        """OpenAI chat completions (streaming and not)."""
        return await chat_completions(request, get_state(request))

    @app.post("/v1/responses", openapi_extra=_json_body(_ResponsesBody))
    async def responses(request: Request) -> Response:
        """OpenAI Responses API: text and function tools."""
        return await responses_create(request, get_state(request))

    @app.post("/v1/sessions", status_code=201, openapi_extra=_json_body(_SessionBody))
    async def create_session(request: Request) -> JSONResponse:
        """Open a session: body ``{"model": ..., "id": optional}``."""
        st = get_state(request)
        raw = await read_body(request, limit=st.config.max_body_bytes, timeout_s=st.config.body_timeout_s)
        body = parse_json_object(raw) if raw.strip() else {}
        model = body.get("model", "")
        sid = body.get("id")
        if not isinstance(model, str):
            raise APIError(400, "model must be a string.", param="model", code="invalid_value")
        if sid is not None and not isinstance(sid, str):
            raise APIError(400, "id must be a string.", param="id", code="invalid_value")
        unknown = sorted(set(body) - {"model", "id"})
        if unknown and st.config.strict_params:
            raise APIError(
                400, f"Unsupported parameter: '{unknown[0]}'.", param=unknown[0], code="unsupported_parameter"
            )
        entry = await st.sessions.create(model.strip(), sid)
        return JSONResponse(entry.as_dict(st.sessions.idle_s), status_code=201)

    @app.get("/v1/sessions")
    async def list_sessions(request: Request) -> JSONResponse:
        """Live sessions."""
        st = get_state(request)
        data = [e.as_dict(st.sessions.idle_s) for e in st.sessions.list()]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> JSONResponse:
        """One session."""
        st = get_state(request)
        return JSONResponse(st.sessions.get(session_id).as_dict(st.sessions.idle_s))

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str, request: Request) -> JSONResponse:
        """Discard a session."""
        st = get_state(request)
        entry = await st.sessions.delete(session_id)
        return JSONResponse({"id": entry.id, "object": "session.deleted", "deleted": True})
