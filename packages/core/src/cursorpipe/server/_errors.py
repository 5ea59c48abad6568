"""Every error the server answers, in OpenAI's JSON shape, from ONE mapping (design.md lesson 3).

``{"error": {"message", "type", "param", "code"}}`` with the right status, ``Retry-After`` on
429/503 and ``x-should-retry: false`` where repeating the request cannot help (the OpenAI SDK
retries 408/409/429/5xx otherwise, integrations.md §4.3).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from .._redact import redact
from ..errors import (
    AgentCrashError,
    AgentNotFoundError,
    AgentStartupError,
    AgentTimeoutError,
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
    SessionError,
    StructuredOutputError,
    UsageLimitError,
)

__all__ = ["APIError", "describe", "error_body", "error_response"]

log = logging.getLogger("cursorpipe.server")

#: Appended to upstream authentication failures whose message does not already say how to fix it
#: (issue 2: a chat request without credentials must say how to log in or set CURSOR_API_KEY).
LOGIN_HINT = (
    "Set CURSOR_API_KEY (a Cursor API key, crsr_...) in the server's environment or .env, or log in "
    "with the Cursor CLI (`agent login`); `cursorpipe doctor` checks the setup."
)


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


def _from_cursorpipe(exc: CursorPipeError) -> APIError:
    msg = exc.message
    code = exc.code
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, msg, param="model", code="model_not_found", should_retry=False)
    if isinstance(exc, OutdatedClientError):
        return APIError(502, msg, type="api_error", code=code, should_retry=False)
    if isinstance(exc, ConfigurationError):
        if code == ErrorCode.TRANSPORT_UNAVAILABLE:
            return APIError(503, msg, type="server_error", code=code, should_retry=False)
        param = exc.details.get("param")
        return APIError(
            400, msg, param=param if isinstance(param, str) else None, code=code, should_retry=False
        )
    if isinstance(exc, PermissionDeniedError):
        return APIError(403, msg, type="permission_error", code=code, should_retry=False)
    if isinstance(exc, AuthenticationError):
        if "CURSOR_API_KEY" not in msg:
            msg = f"{msg.rstrip()} {LOGIN_HINT}"
        return APIError(401, msg, type="authentication_error", code=code, should_retry=False)
    if isinstance(exc, UsageLimitError):
        return APIError(
            429, msg, type="insufficient_quota", code=code, retry_after=exc.retry_after, should_retry=False
        )
    if isinstance(exc, RateLimitError):
        return APIError(
            429,
            msg,
            type="rate_limit_error",
            code=code,
            retry_after=exc.retry_after if exc.retry_after is not None else 1.0,
            should_retry=True,
        )
    if isinstance(exc, AgentStartupError):
        return APIError(503, msg, type="server_error", code=code, retry_after=5.0, should_retry=True)
    if isinstance(exc, AgentTimeoutError):
        # A retry would run the whole (long) turn again: let the caller decide (§4.3).
        return APIError(504, msg, type="timeout_error", code=code, should_retry=False)
    if isinstance(exc, AgentNotFoundError):
        return APIError(503, msg, type="server_error", code=code, should_retry=False)
    if isinstance(exc, (NetworkError, AgentCrashError)):
        return APIError(502, msg, type="api_error", code=code, should_retry=exc.retryable)
    if isinstance(exc, ProtocolError):
        return APIError(502, msg, type="api_error", code=code, should_retry=False)
    if isinstance(exc, StructuredOutputError):
        # The model's answer failed response_format validation even after the core's repair
        # round. A 5xx would surface in the OpenAI SDK as an InternalServerError (and be retried):
        # 422 is one a client can act on (UnprocessableEntityError: relax the schema, rephrase, or
        # retry deliberately), and x-should-retry: false since the same request rarely helps.
        return APIError(422, msg, type="structured_output_error", code=code, should_retry=False)
    if isinstance(exc, SessionError):
        if code == ErrorCode.CLIENT_CLOSED:
            return APIError(503, msg, type="server_error", code=code, retry_after=1.0, should_retry=True)
        return APIError(400, msg, code=code, should_retry=False)
    return APIError(502, msg, type="api_error", code=code, should_retry=exc.retryable)


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


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error JSON for ``exc`` (used for mid-stream error events)."""
    return describe(exc).body()


def error_response(exc: BaseException, *, request_id: str | None = None) -> JSONResponse:
    """The HTTP response for ``exc``: OpenAI error JSON, right status, retry headers."""
    err = describe(exc)
    if err.status >= 500 and not isinstance(exc, (APIError, CursorPipeError, StarletteHTTPException)):
        log.error("request %s failed", request_id or "-", exc_info=exc)
    elif err.status >= 500:
        log.warning("request %s: %s %s", request_id or "-", err.status, redact(err.message))
    return JSONResponse(err.body(), status_code=err.status, headers=err.response_headers())
