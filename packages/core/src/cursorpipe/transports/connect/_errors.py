"""Map Connect errors and Cursor's ``ErrorDetails`` onto cursorpipe's public exceptions.

Follows the official SDK's classification (connect.md §8.2 table, §8.3): the ``ErrorDetails.Error``
enum decides when present, else the Connect code. Where cursorpipe's tree is finer than the SDK's
(usage limit vs rate limit, bad model, outdated client) the split is ours and says so below.
Messages are ``title + " " + detail`` like the SDK's, redacted, plus what to do next.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterable, Mapping, Sequence

from ..._codecs.connect import ConnectError, ErrorDetailsInfo, decode_error_details
from ..._redact import redact
from ...errors import (
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    UsageLimitError,
)

__all__ = ["map_connect_error", "parse_retry_after"]

# ErrorDetails.Error values grouped by the exception they become (connect.md §8.2 table).
_AUTH = {
    2,
    3,
    11,
    12,
    18,
    38,
}  # NOT_LOGGED_IN, INVALID_AUTH_ID, AUTH_TOKEN_*, AGENT_REQUIRES_LOGIN, UNAUTHORIZED
_BAD_KEY = {1, 42}  # BAD_API_KEY, BAD_USER_API_KEY: the SDK says "config"; for us it is a credential problem
_PERMISSION = {4, 23, 54, 64, 65, 66}  # permissions, PRO_USER_ONLY, blocked/closed/region/tenant
# Usage limits and "usage-based pricing required" reset monthly: waiting does not help (§8.4).
_USAGE = {9, 10, 44, 45}
_RATE = {7, 8, 14, 22, 28, 34, 41, 50, 51}
_BAD_MODEL = {5, 58, 61}  # BAD_MODEL_NAME, MODEL_BLOCKED, MODEL_NO_LONGER_SUPPORTED
_OUTDATED = {30}
_CONFIG = {6, 33, 36, 39, 40, 43, 60}  # user not found, bad request, deprecated, too long, max mode
_NETWORK = {25, 55, 56, 57, 59, 63}  # TIMEOUT, EXTENSION_HOST_TIMEOUT, NETWORK, PROVIDER, INTERNAL, SLOW_POOL
_CANCELLED = {21, 35}  # USER_ABORTED_REQUEST, DEBOUNCED
_NOT_RETRIED = {29}  # CUSTOM_MESSAGE (§8.3: not retried)

_AUTH_HINT = (
    "Check the API key (CURSORPIPE_API_KEY / CURSOR_API_KEY) or log in again with `cursor-agent login`."
)
_USAGE_HINT = (
    "Your Cursor usage limit is reached; it resets with the billing cycle (see cursor.com/dashboard)."
)
_RATE_HINT = "Cursor is rate-limiting this account; retry later."
_OUTDATED_HINT = "Cursor rejected this client version; upgrade cursorpipe."
_NET_HINT = "Cursor's backend failed or was unreachable; retrying may help."


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    text = value.strip()
    try:
        secs = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(secs) or math.isinf(secs):
        return None
    return max(0.0, secs)


def _first(meta: Mapping[str, Sequence[str]] | Mapping[str, str] | None, key: str) -> str | None:
    if not meta:
        return None
    for k, v in meta.items():
        if k.lower() == key:
            if isinstance(v, str):
                return v
            return v[0] if v else None
    return None


def _rejected_model(sent: str | None, available: Iterable[str] | None) -> str | None:
    """``sent`` when it cannot be an id ``Run`` accepts: not in the catalogue's ids, or shaped
    like a per-effort sibling slug (row 14; the catalogue folds those into their family)."""
    if not sent or sent.lower() in ("auto", "default"):
        return None
    if available is not None:
        ids = {a.lower() for a in available}
        if ids and sent.lower() not in ids:
            return sent
    _base, sep, level = sent.rpartition("-")
    if sep and level.lower() in {"minimal", "low", "medium", "high", "xhigh", "max"}:
        return sent
    return None


def _message(error: ConnectError, info: ErrorDetailsInfo | None, hint: str) -> str:
    base = (info.text if info is not None else "") or error.message or error.code
    base = redact(base.strip())
    if hint and hint not in base:
        base = f"{base}. {hint}" if not base.endswith((".", "!", "?")) else f"{base} {hint}"
    return base


def map_connect_error(
    error: ConnectError,
    *,
    metadata: Mapping[str, Sequence[str]] | Mapping[str, str] | None = None,
    retry_after: float | None = None,
    request_id: str | None = None,
    model: str | None = None,
    sent_model: str | None = None,
    available_models: Iterable[str] | None = None,
    transport: str = "connect",
) -> CursorPipeError:
    """The public exception for a Connect ``error`` (from an end-stream frame or a unary reply).

    ``metadata`` (end-stream metadata or response headers) supplies ``retry-after`` when
    ``retry_after`` is not given; ``model``/``available_models`` make a bad-model error a
    :class:`ModelNotFoundError` that lists valid ids. ``sent_model`` is the id actually sent for
    ``model`` (after resolution): a *bare* ``resource_exhausted`` (no ``ErrorDetails``, no
    ``retry-after``) on an id the catalogue does not list, or on a per-effort sibling slug, is a
    rejected model id, not a rate limit (live-dialect.md row 14). The returned exception's
    ``details`` hold the Connect code and the decoded ``ErrorDetails`` fields.
    """
    info: ErrorDetailsInfo | None
    try:
        info = decode_error_details(error.details)
    except ProtocolError:
        info = None  # a mangled detail must not hide the real error: fall back to the Connect code
    if retry_after is None:
        retry_after = parse_retry_after(_first(metadata, "retry-after"))
    details: dict[str, object] = {"connect_code": error.code}
    if info is not None:
        details.update(
            error_details=info.name,
            title=info.title,
            detail=info.detail,
            is_retryable=info.is_retryable,
            is_expected=info.is_expected,
        )
    common: dict[str, object] = {
        "request_id": request_id,
        "transport": transport,
        "details": details,
        "retry_after": retry_after,
    }

    def build(cls: type[CursorPipeError], hint: str, code: str, **extra: object) -> CursorPipeError:
        kwargs = {**common, **extra, "code": code}
        return cls(_message(error, info, hint), **kwargs)  # type: ignore[arg-type]

    if info is not None:
        n, name = info.error, info.name
        explicit = info.is_retryable
        if n in _AUTH or n in _BAD_KEY:
            return build(AuthenticationError, _AUTH_HINT, name)
        if n in _PERMISSION:
            return build(PermissionDeniedError, "", name)
        if n in _USAGE:
            return build(UsageLimitError, _USAGE_HINT, name, retryable=False)
        if n in _RATE:
            return build(RateLimitError, _RATE_HINT, name, retryable=explicit is not False)
        if n in _BAD_MODEL:
            return ModelNotFoundError(
                model or "(unknown)",
                sorted(available_models or []),
                message=_message(error, info, "Run `cursorpipe models` to list the models you can use."),
                code=name,
                **common,
            )
        if n in _OUTDATED:
            return build(OutdatedClientError, _OUTDATED_HINT, name)
        if n in _CONFIG:
            return build(ConfigurationError, "", name)
        if n in _NETWORK:
            return build(NetworkError, _NET_HINT, name, retryable=explicit is not False)
        if n in _CANCELLED:
            return build(CursorPipeError, "", name, retryable=False)
        if n in _NOT_RETRIED:
            return build(CursorPipeError, "", name, retryable=False)
        # Unknown class: the SDK retries unless is_retryable is false (§8.3); otherwise the code decides.
        if explicit is not None:
            return build(CursorPipeError, "", name, retryable=explicit)

    if info is None and error.http_status == 429:
        # live-dialect.md row 18: an HTTP 429 without a Connect body comes from an edge rate limiter
        # (the SDK's status table calls it `unavailable`, connect.md §8.1). It is a rate limit, not
        # an unreachable backend: say so and keep the Retry-After.
        wait = f" Retry after {retry_after:g} s." if retry_after is not None else " Retry shortly."
        return RateLimitError(
            "Cursor rate-limited this request (HTTP 429 with no Connect error body)." + wait,
            code="http_429",
            **common,
        )
    if info is None and error.http_status == 464:
        # live-dialect.md row 21: the agent path's load balancer refuses HTTP/1.1 with a bare 464.
        return NetworkError(
            "Cursor refused the HTTP/1.1 request on its agent endpoint (HTTP 464): the Run stream is "
            "served only over HTTP/2. Use the https backend with CURSORPIPE_USE_HTTP2=auto (the "
            "default) or always, and check that no proxy downgrades the connection.",
            code="http1_refused",
            retryable=False,
            **common,
        )
    code = error.code
    text = (info.text if info is not None else "") or error.message
    lowered = text.lower()
    if code == "unauthenticated":
        return build(AuthenticationError, _AUTH_HINT, info.name if info else code)
    if code == "permission_denied":
        return build(PermissionDeniedError, "", info.name if info else code)
    if code == "resource_exhausted" and info is None and retry_after is None:
        rejected = _rejected_model(sent_model or model, available_models)
        if rejected is not None:
            valid = sorted(available_models or [])
            return ModelNotFoundError(
                model or rejected,
                valid,
                message=(
                    f"Cursor refused the model id {rejected!r} (a bare resource_exhausted, which is how "
                    "Run rejects ids it does not accept, such as per-effort slugs like 'gpt-5.2-high'). "
                    + (f"Valid ids: {', '.join(valid)}. " if valid else "")
                    + "Name the model family and pass reasoning_effort instead; `cursorpipe models` "
                    "lists the ids."
                ),
                code="model_rejected",
                **common,
            )
    if code == "resource_exhausted":
        # [G] connect.md §8.4: the version gate and quota also arrive as resource_exhausted; without
        # ErrorDetails only the text tells them apart.
        if "update to the latest version" in lowered or "no longer supports" in lowered:
            return build(OutdatedClientError, _OUTDATED_HINT, "outdated_client")
        if "usage limit" in lowered or "requests limit" in lowered:
            return build(UsageLimitError, _USAGE_HINT, "usage_limit", retryable=False)
        return build(RateLimitError, _RATE_HINT, code)
    if code in ("invalid_argument", "not_found", "failed_precondition", "out_of_range", "unimplemented"):
        return build(ConfigurationError, "", code)
    if code == "internal" and "blob not found" in lowered:
        # live-dialect.md rows 4 and 10: the conversation's state names a blob the service does not
        # have (a checkpoint lost when a stream was reset before its end, or data inlined where a blob
        # id belongs). The same request fails the same way, so retrying only adds seconds.
        return build(
            ProtocolError,
            "The conversation's saved state refers to data Cursor does not have; start a new session.",
            "blob_not_found",
            retryable=False,
        )
    if code in ("unavailable", "deadline_exceeded", "internal", "unknown", "aborted", "data_loss"):
        return build(NetworkError, _NET_HINT, code)
    if code == "canceled":
        return build(CursorPipeError, "", code, retryable=False)
    return build(CursorPipeError, "", code, retryable=False)
