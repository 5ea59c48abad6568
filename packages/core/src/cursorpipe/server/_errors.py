"""Every error the server answers, in OpenAI's JSON shape, from ONE mapping (design.md lesson 3).

``{"error": {"message", "type", "param", "code"}}`` with the right status, ``Retry-After`` on
429/503 and ``x-should-retry: false`` where repeating the request cannot help (the OpenAI SDK
retries 408/409/429/5xx otherwise, integrations.md §4.3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from .._redact import redact
from ..errors import (
    AgentCrashError,
    AgentNotFoundError,
    AgentStartupError,
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    ErrorCode,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    SessionError,
    StructuredOutputError,
    UsageLimitError,
)

__all__ = [
    "STATUS_BY_ERROR",
    "APIError",
    "ClientGone",
    "ErrorShape",
    "describe",
    "error_body",
    "error_response",
    "openai_error_body",
]

log = logging.getLogger("cursorpipe.server")

#: Appended to upstream authentication failures whose message does not already say how to fix it
#: (issue 2: a chat request without credentials must say how to log in or set CURSOR_API_KEY).
LOGIN_HINT = (
    "Set CURSOR_API_KEY (a Cursor API key, crsr_...) in the server's environment or .env, or log in "
    "with the Cursor CLI (`agent login`); `cursorpipe doctor` checks the setup."
)


class ClientGone(Exception):
    """The client disconnected before the answer was ready (answered 499, never retried)."""


class APIError(Exception):
    """An error answered over HTTP. Raise it anywhere in the server; the one handler renders it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {
            "error": {
                "message": redact(self.message),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response_headers(self) -> dict[str, str]:
        """Headers that go with this error (Retry-After, x-should-retry, extra)."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(1, int(self.retry_after * 1000)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


@dataclass(frozen=True, slots=True)
class Status:
    """How one class of core error is answered over HTTP."""

    status: int
    type: str = "api_error"
    #: ``x-should-retry``; ``None`` takes the error's own ``retryable``.
    should_retry: bool | None = False
    #: Retry-After when the error carries none (only used where ``own_retry_after`` or no own value).
    retry_after: float | None = None
    #: Use the error's own ``retry_after`` (what Cursor asked for) when it has one.
    own_retry_after: bool = False


#: Core error class -> HTTP answer, most specific class first (the first ``isinstance`` match
#: wins). The OpenAI SDK retries 408/409/429/5xx unless ``x-should-retry: false`` (integrations.md
#: §4.3), so the flag is set wherever repeating the same request cannot help.
STATUS_BY_ERROR: tuple[tuple[type[CursorPipeError], Status], ...] = (
    (ModelNotFoundError, Status(404, "invalid_request_error")),
    (OutdatedClientError, Status(502)),
    (ConfigurationError, Status(400, "invalid_request_error")),
    (PermissionDeniedError, Status(403, "permission_error")),
    (AuthenticationError, Status(401, "authentication_error")),
    (UsageLimitError, Status(429, "insufficient_quota", own_retry_after=True)),
    (
        RateLimitError,
        Status(429, "rate_limit_error", should_retry=True, retry_after=1.0, own_retry_after=True),
    ),
    (AgentStartupError, Status(503, "server_error", should_retry=True, retry_after=5.0)),
    # A retry would run the whole (long) turn again: let the caller decide (§4.3).
    (RequestTimeoutError, Status(504, "timeout_error")),
    (AgentNotFoundError, Status(503, "server_error")),
    (NetworkError, Status(502, should_retry=None)),
    (AgentCrashError, Status(502, should_retry=None)),
    (ProtocolError, Status(502)),
    # The answer failed response_format validation even after the core's repair round. A 5xx
    # would surface in the OpenAI SDK as an InternalServerError (and be retried): 422 is one a
    # client can act on (relax the schema, rephrase, or retry deliberately).
    (StructuredOutputError, Status(422, "structured_output_error")),
    (SessionError, Status(400, "invalid_request_error")),
)
#: Codes that answer differently from their class's row.
STATUS_BY_CODE: dict[str, Status] = {
    ErrorCode.TRANSPORT_UNAVAILABLE: Status(503, "server_error"),
    ErrorCode.CLIENT_CLOSED: Status(503, "server_error", should_retry=True, retry_after=1.0),
    # The team gateway's shared state (issue 17): the store unreachable, a session busy on
    # another replica, a turn whose lease expired before it was saved.
    "state_unavailable": Status(
        503, "server_error", should_retry=True, retry_after=2.0, own_retry_after=True
    ),
    "session_busy": Status(409, "invalid_request_error", should_retry=True, retry_after=1.0),
    "session_lease_lost": Status(409, "invalid_request_error", should_retry=True, retry_after=1.0),
}
_FALLBACK = Status(502, should_retry=None)


def _status_of(exc: CursorPipeError) -> Status:
    by_code = STATUS_BY_CODE.get(exc.code or "")
    if by_code is not None and isinstance(exc, (ConfigurationError, SessionError, NetworkError)):
        return by_code
    for cls, rule in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return rule
    return _FALLBACK


def _from_cursorpipe(exc: CursorPipeError) -> APIError:
    rule = _status_of(exc)
    msg, code, param = exc.message, exc.code, None
    if isinstance(exc, ModelNotFoundError):
        code, param = "model_not_found", "model"
    elif isinstance(exc, ConfigurationError) and rule.status == 400:
        given = exc.details.get("param")
        param = given if isinstance(given, str) else None
    elif rule.status == 401 and "CURSOR_API_KEY" not in msg:
        msg = f"{msg.rstrip()} {LOGIN_HINT}"
    retry_after = rule.retry_after
    if rule.own_retry_after and exc.retry_after is not None:
        retry_after = exc.retry_after
    elif rule.own_retry_after and rule.retry_after is None:
        retry_after = None
    should_retry = exc.retryable if rule.should_retry is None else rule.should_retry
    return APIError(
        rule.status,
        msg,
        type=rule.type,
        param=param,
        code=code,
        retry_after=retry_after,
        should_retry=should_retry,
    )


def describe(exc: BaseException) -> APIError:
    """The :class:`APIError` for any exception (the single mapping of the server)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, CursorPipeError):
        return _from_cursorpipe(exc)
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 404:
            return APIError(404, "Unknown URL: no such endpoint.", type="not_found_error", code="not_found")
        if status == 405:
            allow = headers.get("Allow") or headers.get("allow") or ""
            return APIError(
                405,
                f"Method not allowed on this endpoint (allowed: {allow or 'none'}).",
                code="method_not_allowed",
                headers=headers,
                should_retry=False,
            )
        return APIError(status, str(exc.detail), code=str(status), headers=headers)
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query"))
        return APIError(
            400,
            f"Invalid request: {first.get('msg', 'validation failed')}",
            param=loc or None,
            code="invalid_value",
            should_retry=False,
        )
    return APIError(
        500,
        "Internal server error; the server log has the details (search it for the request id).",
        type="server_error",
        code="internal_error",
    )


#: Turns an :class:`APIError` into a wire format's error JSON (OpenAI's by default).
ErrorShape = Callable[["APIError"], dict[str, Any]]


def openai_error_body(err: APIError) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return err.body()


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error JSON for ``exc`` (used for mid-stream error events)."""
    return describe(exc).body()


def error_response(
    exc: BaseException, *, request_id: str | None = None, shape: ErrorShape | None = None
) -> JSONResponse:
    """The HTTP response for ``exc``: the error JSON of the route's wire format (``shape``,
    OpenAI's by default), right status, retry headers."""
    err = describe(exc)
    if err.status >= 500 and not isinstance(exc, (APIError, CursorPipeError, StarletteHTTPException)):
        log.error("request %s failed", request_id or "-", exc_info=exc)
    elif err.status >= 500:
        log.warning("request %s: %s %s", request_id or "-", err.status, redact(err.message))
    body = (shape or openai_error_body)(err)
    return JSONResponse(body, status_code=err.status, headers=err.response_headers())
