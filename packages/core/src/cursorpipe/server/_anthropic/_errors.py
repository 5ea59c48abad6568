"""Errors in Anthropic's shape (docs/anthropic.md §5).

The server's one mapping (``_errors.describe``) decides the status and the retry headers of every
failure; this module only gives the body its Anthropic dress: ``{"type": "error", "error":
{"type", "message"}}`` with Anthropic's error type for the status. So both wire formats answer
the same failure with the same status and the same retry advice.
"""

from __future__ import annotations

from typing import Any

from ..._redact import redact
from .._errors import APIError

__all__ = ["ANTHROPIC_PATHS", "anthropic_error_body", "anthropic_error_type", "is_anthropic_path"]

#: Paths whose every answer, errors included, is in Anthropic's shape.
ANTHROPIC_PATHS = ("/v1/messages",)


def is_anthropic_path(path: str) -> bool:
    """Whether every answer on ``path``, errors included, is in Anthropic's shape."""
    return path.startswith(ANTHROPIC_PATHS)


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


def anthropic_error_body(err: APIError) -> dict[str, Any]:
    """Anthropic's error JSON for an error of the server's mapping (the route's ``ErrorShape``;
    the request id travels in the ``request-id`` header)."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(err.status), "message": redact(err.message)},
    }
