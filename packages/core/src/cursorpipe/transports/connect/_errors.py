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
from dataclasses import dataclass

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

_AUTH_HINT = (
    "Check the API key (CURSORPIPE_API_KEY / CURSOR_API_KEY) or log in again with `cursor-agent login`."
)
_USAGE_HINT = (
    "Your Cursor usage limit is reached; it resets with the billing cycle (see cursor.com/dashboard)."
)
_RATE_HINT = "Cursor is rate-limiting this account; retry later."
_OUTDATED_HINT = "Cursor rejected this client version; upgrade cursorpipe."
_NET_HINT = "Cursor's backend failed or was unreachable; retrying may help."

#: How an error becomes an exception: the class, the hint appended to the message, and the
#: ``retryable`` rule: ``None`` keeps the class default, ``False`` forces it off, ``EXPLICIT`` keeps
#: the class default unless ``ErrorDetails.is_retryable`` is false (the SDK's rule, connect.md §8.3).
EXPLICIT = "explicit"


@dataclass(frozen=True)
class _Rule:
    cls: type[CursorPipeError]
    hint: str = ""
    retryable: bool | str | None = None


# ErrorDetails.Error values grouped by the exception they become (connect.md §8.2 table). Where
# cursorpipe's tree is finer than the SDK's the split is ours: BAD_API_KEY / BAD_USER_API_KEY are
# "config" for the SDK and a credential problem here; usage limits and "usage-based pricing
# required" reset monthly, so waiting does not help (§8.4) and they are never retried.
_DETAIL_TABLE: tuple[tuple[frozenset[int], _Rule], ...] = (
    # NOT_LOGGED_IN, INVALID_AUTH_ID, AUTH_TOKEN_*, AGENT_REQUIRES_LOGIN, UNAUTHORIZED, BAD_*_API_KEY
    (frozenset({2, 3, 11, 12, 18, 38, 1, 42}), _Rule(AuthenticationError, _AUTH_HINT)),
    # permissions, PRO_USER_ONLY, blocked/closed/region/tenant
    (frozenset({4, 23, 54, 64, 65, 66}), _Rule(PermissionDeniedError)),
    (frozenset({9, 10, 44, 45}), _Rule(UsageLimitError, _USAGE_HINT, False)),
    (frozenset({7, 8, 14, 22, 28, 34, 41, 50, 51}), _Rule(RateLimitError, _RATE_HINT, EXPLICIT)),
    (frozenset({30}), _Rule(OutdatedClientError, _OUTDATED_HINT)),
    # user not found, bad request, deprecated, too long, max mode
    (frozenset({6, 33, 36, 39, 40, 43, 60}), _Rule(ConfigurationError)),
    # TIMEOUT, EXTENSION_HOST_TIMEOUT, NETWORK, PROVIDER, INTERNAL, SLOW_POOL
    (frozenset({25, 55, 56, 57, 59, 63}), _Rule(NetworkError, _NET_HINT, EXPLICIT)),
    # USER_ABORTED_REQUEST, DEBOUNCED; CUSTOM_MESSAGE (§8.3: not retried)
    (frozenset({21, 35, 29}), _Rule(CursorPipeError, "", False)),
)
_BY_DETAIL: dict[int, _Rule] = {n: rule for numbers, rule in _DETAIL_TABLE for n in numbers}
#: BAD_MODEL_NAME, MODEL_BLOCKED, MODEL_NO_LONGER_SUPPORTED: a ModelNotFoundError listing valid ids.
_BAD_MODEL = frozenset({5, 58, 61})

_NOT_RETRIED = _Rule(CursorPipeError, "", False)
_CONFIG = _Rule(ConfigurationError)
_NETWORK = _Rule(NetworkError, _NET_HINT)
#: Connect codes without a usable ``ErrorDetails`` (connect.md §8.1/§8.3); anything else is a
#: plain, non-retried CursorPipeError.
_BY_CODE: dict[str, _Rule] = {
    "unauthenticated": _Rule(AuthenticationError, _AUTH_HINT),
    "permission_denied": _Rule(PermissionDeniedError),
    "invalid_argument": _CONFIG,
    "not_found": _CONFIG,
    "failed_precondition": _CONFIG,
    "out_of_range": _CONFIG,
    "unimplemented": _CONFIG,
    "unavailable": _NETWORK,
    "deadline_exceeded": _NETWORK,
    "internal": _NETWORK,
    "unknown": _NETWORK,
    "aborted": _NETWORK,
    "data_loss": _NETWORK,
}
#: Codes whose exception carries the ErrorDetails name (when present) rather than the Connect code.
_NAMED_BY_DETAIL = frozenset({"unauthenticated", "permission_denied"})


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
    m = _Mapping(error, info, retry_after, request_id, transport, model, sent_model, available_models)
    return (
        (m.from_details() if info is not None else m.from_http_status())
        or m.from_resource_exhausted()
        or m.from_code()
    )


class _Mapping:
    """One error being mapped: the shared keyword arguments and the steps of
    :func:`map_connect_error`, each returning the exception or ``None`` to let the next step decide."""

    def __init__(
        self,
        error: ConnectError,
        info: ErrorDetailsInfo | None,
        retry_after: float | None,
        request_id: str | None,
        transport: str,
        model: str | None,
        sent_model: str | None,
        available_models: Iterable[str] | None,
    ) -> None:
        self.error, self.info, self.retry_after = error, info, retry_after
        self.model, self.sent_model = model, sent_model
        self.available = None if available_models is None else list(available_models)
        details: dict[str, object] = {"connect_code": error.code}
        if info is not None:
            details.update(
                error_details=info.name,
                title=info.title,
                detail=info.detail,
                is_retryable=info.is_retryable,
                is_expected=info.is_expected,
            )
        self.common: dict[str, object] = {
            "request_id": request_id,
            "transport": transport,
            "details": details,
            "retry_after": retry_after,
        }

    def build(self, rule: _Rule, code: str) -> CursorPipeError:
        kwargs = {**self.common, "code": code}
        if rule.retryable is EXPLICIT:
            explicit = self.info.is_retryable if self.info is not None else None
            kwargs["retryable"] = explicit is not False
        elif rule.retryable is not None:
            kwargs["retryable"] = rule.retryable
        return rule.cls(_message(self.error, self.info, rule.hint), **kwargs)  # type: ignore[arg-type]

    def from_details(self) -> CursorPipeError | None:
        info = self.info
        assert info is not None
        rule = _BY_DETAIL.get(info.error)
        if rule is not None:
            return self.build(rule, info.name)
        if info.error in _BAD_MODEL:
            return ModelNotFoundError(
                self.model or "(unknown)",
                sorted(self.available or []),
                message=_message(self.error, info, "Run `cursorpipe models` to list the models you can use."),
                code=info.name,
                **self.common,
            )
        # Unknown class: the SDK retries unless is_retryable is false (§8.3); otherwise the code decides.
        if info.is_retryable is not None:
            return self.build(_Rule(CursorPipeError, "", info.is_retryable), info.name)
        return None

    def from_http_status(self) -> CursorPipeError | None:
        status = self.error.http_status
        if status == 429:
            # live-dialect.md row 18: an HTTP 429 without a Connect body comes from an edge rate
            # limiter (the SDK's status table calls it `unavailable`, connect.md §8.1). It is a rate
            # limit, not an unreachable backend: say so and keep the Retry-After.
            wait = (
                f" Retry after {self.retry_after:g} s." if self.retry_after is not None else " Retry shortly."
            )
            return RateLimitError(
                "Cursor rate-limited this request (HTTP 429 with no Connect error body)." + wait,
                code="http_429",
                **self.common,
            )
        if status == 464:
            # live-dialect.md row 21: the agent path's load balancer refuses HTTP/1.1 with a bare 464.
            return NetworkError(
                "Cursor refused the HTTP/1.1 request on its agent endpoint (HTTP 464): the Run stream is "
                "served only over HTTP/2. Use the https backend with CURSORPIPE_USE_HTTP2=auto (the "
                "default) or always, and check that no proxy downgrades the connection.",
                code="http1_refused",
                retryable=False,
                **self.common,
            )
        return None

    def from_resource_exhausted(self) -> CursorPipeError | None:
        if self.error.code != "resource_exhausted":
            return None
        if self.info is None and self.retry_after is None:
            rejected = _rejected_model(self.sent_model or self.model, self.available)
            if rejected is not None:
                return self._model_rejected(rejected)
        # [G] connect.md §8.4: the version gate and quota also arrive as resource_exhausted; without
        # ErrorDetails only the text tells them apart.
        lowered = self._text().lower()
        if "update to the latest version" in lowered or "no longer supports" in lowered:
            return self.build(_Rule(OutdatedClientError, _OUTDATED_HINT), "outdated_client")
        if "usage limit" in lowered or "requests limit" in lowered:
            return self.build(_Rule(UsageLimitError, _USAGE_HINT, False), "usage_limit")
        return self.build(_Rule(RateLimitError, _RATE_HINT), "resource_exhausted")

    def _model_rejected(self, rejected: str) -> ModelNotFoundError:
        valid = sorted(self.available or [])
        return ModelNotFoundError(
            self.model or rejected,
            valid,
            message=(
                f"Cursor refused the model id {rejected!r} (a bare resource_exhausted, which is how "
                "Run rejects ids it does not accept, such as per-effort slugs like 'gpt-5.2-high'). "
                + (f"Valid ids: {', '.join(valid)}. " if valid else "")
                + "Name the model family and pass reasoning_effort instead; `cursorpipe models` "
                "lists the ids."
            ),
            code="model_rejected",
            **self.common,
        )

    def _text(self) -> str:
        return (self.info.text if self.info is not None else "") or self.error.message

    def from_code(self) -> CursorPipeError:
        code = self.error.code
        if code == "internal" and "blob not found" in self._text().lower():
            # live-dialect.md rows 4 and 10: the conversation's state names a blob the service does
            # not have (a checkpoint lost when a stream was reset before its end, or data inlined
            # where a blob id belongs). The same request fails the same way, so retrying only adds
            # seconds.
            hint = "The conversation's saved state refers to data Cursor does not have; start a new session."
            return self.build(_Rule(ProtocolError, hint, False), "blob_not_found")
        name = self.info.name if self.info is not None and code in _NAMED_BY_DETAIL else code
        return self.build(_BY_CODE.get(code, _NOT_RETRIED), name)
