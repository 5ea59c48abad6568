"""The outermost layer of every request: the guard middleware (request ids, bearer auth, the
Host check, the JSON content-type rule, 503 while draining, request metrics, a last-resort 500 in
OpenAI's shape) and CORS refusals in OpenAI's shape (issue 12)."""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._anthropic._errors import anthropic_error_body, is_anthropic_path
from ._errors import APIError, error_response
from ._gate import draining_error
from ._gateway._callers import CALLER_KEY
from ._state import ServerState
from ._turn import ERROR_SHAPE_KEY

__all__ = ["HEALTH_PATHS", "Endpoint", "ErrorHandler", "GuardMiddleware", "OpenAICORSMiddleware"]

#: A raw route's endpoint: the request in, the response out.
Endpoint = Callable[[Request], Awaitable[Response]]
#: The app's exception handler: the response for an exception an endpoint raised.
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_RUN_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages"})
_KNOWN_PATHS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages/count_tokens",
    "/v1/messages",
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

    def __init__(
        self,
        app: ASGIApp,
        state: ServerState,
        direct: Mapping[str, Endpoint] | None = None,
        on_error: ErrorHandler | None = None,
        handled: tuple[type[Exception], ...] = (),
    ) -> None:
        self.app = app
        self.state = state
        # The generation routes (POST on an exact path) are called straight from here: routing,
        # FastAPI's exception middleware and exit stacks, and Starlette's request wrapper cost
        # more per request than the rest of the server's own work on a short answer (issue 16).
        # Their exceptions get the app's own handler (``on_error`` for the ``handled`` types),
        # as routing would have given them; every other method and path is routed as before.
        self._direct = dict(direct or {})
        self._on_error = on_error
        self._handled = handled
        token = state.config.bearer_token.get_secret_value()
        self._token = token.encode() if token else None
        # Passthrough (issue 17): every request carries the caller's own Cursor API key, checked by
        # the gateway (and by Cursor), so neither the bearer token nor the Host rule applies.
        self._passthrough = state.config.auth_mode == "passthrough"
        extra = {h.strip().lower() for h in state.config.allowed_hosts.split(",") if h.strip()}
        bind = state.config.host.strip().lower()
        if bind and bind not in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - compared, not bound
            extra.add(bind)
        self._allowed_hosts = frozenset(extra)

    def _host_allowed(self, scope: Scope) -> bool:
        """Without a bearer token anything that can make the browser send a request can spend the
        account; DNS rebinding does it under a foreign name, so only loopback names (and the
        configured ones) are served (issue 12 item 6)."""
        if self._token is not None or self._passthrough:
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

    def _caller_slot(
        self, scope: Scope, method: str, exempt: bool
    ) -> AbstractAsyncContextManager[None] | None:
        """With the team gateway: identify the caller (401/403 in passthrough without a usable key)
        and, for POSTs, the caller's slot to take before the server-wide gate (issue 17). None when
        there is nothing to take: the request goes on without entering a context (an empty one
        still costs two coroutines per request, issue 16)."""
        gateway = self.state.gateway
        if gateway is None or exempt:
            return None
        caller = scope["state"][CALLER_KEY] = gateway.caller(Headers(scope=scope))
        return gateway.admit(caller) if method == "POST" else None

    def _authorized(self, scope: Scope) -> bool:
        """``Authorization: Bearer <token>`` or Anthropic's ``x-api-key: <token>``, either
        compared in constant time; in passthrough the key is the caller's own Cursor key, checked
        by the gateway instead."""
        if self._token is None or self._passthrough:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() == b"bearer" and secrets.compare_digest(credential.strip(), self._token):
                    return True
            elif name == b"x-api-key" and secrets.compare_digest(value.strip(), self._token):
                return True
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
        path: str = scope.get("path", "")
        # The Anthropic routes answer every error, the guard's own included, in Anthropic's shape,
        # and carry the request id under Anthropic's header name too.
        shape = anthropic_error_body if is_anthropic_path(path) else None
        id_headers = [(b"x-request-id", request_id.encode())]
        if shape is not None:
            scope["state"][ERROR_SHAPE_KEY] = shape
            id_headers.append((b"request-id", request_id.encode()))
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
                headers.extend(id_headers)
                message = {**message, "headers": headers}
            await send(message)

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
                await error_response(err, request_id=request_id, shape=shape)(scope, receive, send_with_id)
            elif not exempt and not self._authorized(scope):
                err = APIError(
                    401,
                    "Missing or wrong bearer token: send 'Authorization: Bearer <CURSORPIPE_BEARER_TOKEN>' "
                    "(or 'x-api-key: <CURSORPIPE_BEARER_TOKEN>').",
                    type="authentication_error",
                    code="invalid_api_key",
                    should_retry=False,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await error_response(err, request_id=request_id, shape=shape)(scope, receive, send_with_id)
            elif method == "POST" and not _json_or_empty(scope):
                # A browser sends text/plain or form bodies cross-origin without a preflight (CSRF);
                # application/json always needs one, which CORS then refuses.
                err = APIError(
                    415,
                    "POST bodies must be sent with 'Content-Type: application/json'.",
                    code="unsupported_media_type",
                    should_retry=False,
                )
                await error_response(err, request_id=request_id, shape=shape)(scope, receive, send_with_id)
            elif not exempt and self.state.phase == "draining":
                await error_response(draining_error(), request_id=request_id, shape=shape)(
                    scope, receive, send_with_id
                )
            else:
                endpoint = self._direct.get(path) if method == "POST" else None
                slot = self._caller_slot(scope, method, exempt)
                if slot is None:
                    await self._call(endpoint, scope, receive, send_with_id, lambda: response_started)
                else:
                    async with slot:
                        await self._call(endpoint, scope, receive, send_with_id, lambda: response_started)
        except Exception as exc:
            if response_started:
                raise
            await error_response(exc, request_id=request_id, shape=shape)(scope, receive, send_with_id)
        finally:
            self.state.metrics.observe_request(
                _metric_path(path), method, status, time.perf_counter() - started
            )

    async def _call(
        self,
        endpoint: Endpoint | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: Callable[[], bool],
    ) -> None:
        """The app for a request without a direct route; a direct route run as Starlette's router
        would: its exceptions of a handled type are answered by the app's handler unless the
        response has started (then they propagate)."""
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
            await response(scope, receive, send)
        except Exception as exc:
            if self._on_error is None or started() or not isinstance(exc, self._handled):
                raise
            response = await self._on_error(request, exc)
            await response(scope, receive, send)


class OpenAICORSMiddleware(CORSMiddleware):
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
