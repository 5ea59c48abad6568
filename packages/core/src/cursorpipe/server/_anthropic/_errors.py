"""Errors in Anthropic's shape (docs/anthropic.md §5).

The server's one mapping (``_errors.describe``) decides the status and the retry headers for every
failure; this module only re-dresses the result: ``{"type": "error", "error": {"type", "message"},
"request_id"}``, Anthropic's error type for the status, and a ``request-id`` header beside the
``x-request-id`` every response carries. So both wire formats answer the same failure with the
same status and the same retry advice.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from ..._redact import redact
from .._errors import describe, error_response

__all__ = ["anthropic_error_body", "anthropic_error_response", "anthropic_error_type", "error_frame"]

#: Anthropic's error types by HTTP status (its documented pairs, plus the statuses cursorpipe's
#: mapping uses: 405/408/415/422 are request problems, 502 an upstream failure).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status."""
    found = _TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(exc: BaseException, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error JSON for any exception (the message is the server mapping's, redacted)."""
    err = describe(exc)
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": anthropic_error_type(err.status), "message": redact(err.message)},
    }
    if request_id:
        body["request_id"] = request_id
    return body


def anthropic_error_response(exc: BaseException, *, request_id: str | None = None) -> JSONResponse:
    """The HTTP response for ``exc`` in Anthropic's shape: the status and the ``Retry-After`` /
    ``x-should-retry`` headers of the shared mapping (which also logs 5xx), plus ``request-id``."""
    shared = error_response(exc, request_id=request_id)  # logs and decides status and headers
    headers = {k: v for k, v in shared.headers.items() if k.lower() not in ("content-length", "content-type")}
    if request_id:
        headers["request-id"] = request_id
    return JSONResponse(
        anthropic_error_body(exc, request_id), status_code=shared.status_code, headers=headers
    )


def error_frame(exc: BaseException, request_id: str | None = None) -> bytes:
    """A mid-stream ``error`` event (the Anthropic SDKs raise it as the matching API error)."""
    data = json.dumps(anthropic_error_body(exc, request_id), separators=(",", ":"), ensure_ascii=False)
    return f"event: error\ndata: {data}\n\n".encode()
