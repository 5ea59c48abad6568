"""The one error tree of cursorpipe.

Every transport maps its native failures (HTTP status, Connect code and Cursor ``ErrorDetails``,
JSON-RPC error, CLI stderr and exit code) onto these classes at its own edge, chaining the cause.
``asyncio.CancelledError`` is never caught and converted. Every message says what to do next, and
no message ever contains a credential.

The tree has three groups, by who can fix the failure, and one cross-cutting family::

    CursorPipeError
    ├── TransportError              no answer came back: the way to Cursor failed
    │   ├── NetworkError            DNS, TLS, proxy, connection (retryable)
    │   │   └── StreamDroppedError  the stream ended before the turn did
    │   ├── StreamStalledError      the stream went silent (also a RequestTimeoutError)
    │   └── TransportFailureError   this transport is broken; ``auto`` falls back to the next
    │       ├── AgentNotFoundError  no ``agent`` executable
    │       ├── AgentStartupError   the agent did not become ready (also a RequestTimeoutError)
    │       ├── AgentCrashError     the agent process exited
    │       └── ProtocolError       the other side broke the protocol
    ├── APIError                    Cursor answered, and the answer is no
    │   ├── AuthenticationError     credentials missing, invalid or expired
    │   │   └── PermissionDeniedError
    │   ├── RateLimitError          retry after ``retry_after``
    │   │   └── UsageLimitError     the account's quota: waiting will not help
    │   └── SessionError            a session cannot be opened or used
    ├── CallerError                 what the caller asked for or supplied must change
    │   ├── ConfigurationError      bad configuration or parameters (also a ValueError)
    │   │   ├── ModelNotFoundError
    │   │   └── OutdatedClientError
    │   ├── StructuredOutputError   the answer does not validate against the requested schema
    │   ├── ToolLoopError           too many tool rounds
    │   └── ToolResultTimeoutError  a tool handler was too slow (also a RequestTimeoutError)
    └── RequestTimeoutError         a deadline passed (also the builtin TimeoutError)

``RequestTimeoutError`` (formerly ``AgentTimeoutError``, still importable under that name) is a
family across the groups: each of its subclasses sits in one group, while a ``RequestTimeoutError``
raised as such (the request's ``timeout_s``, a CLI command's deadline) is in none, because a
deadline says only that time ran out, not who is to blame. ``ModelNotFoundError`` and
``OutdatedClientError`` are reported by Cursor but sit under ``ConfigurationError``: the fix is the
caller's (another model name, an upgrade), and they were ``ConfigurationError``/``ValueError``
before the groups existed, which the tree keeps.

``code`` carries a finer, stable reason; :class:`ErrorCode` lists the codes that cursorpipe itself
branches on (any other code is informative only).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "APIError",
    "AgentCrashError",
    "AgentNotFoundError",
    "AgentStartupError",
    "AgentTimeoutError",
    "AuthenticationError",
    "CallerError",
    "ConfigurationError",
    "CursorPipeError",
    "ErrorCode",
    "ModelNotFoundError",
    "NetworkError",
    "OutdatedClientError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeoutError",
    "SessionError",
    "StreamDroppedError",
    "StreamStalledError",
    "StructuredOutputError",
    "ToolLoopError",
    "ToolResultTimeoutError",
    "TransportError",
    "TransportFailureError",
    "UsageLimitError",
]


class ErrorCode(StrEnum):
    """The values of :attr:`CursorPipeError.code` that code (cursorpipe's or yours) branches on.

    A ``StrEnum``: every member equals its string, so ``exc.code == "client_closed"`` and
    ``exc.code == ErrorCode.CLIENT_CLOSED`` agree, and ``code`` itself stays a plain ``str``.
    """

    #: :class:`ConfigurationError`: the requested transport (or, for ``auto``, every candidate) is
    #: not available in this installation. ``auto`` skips such a candidate; the server answers 503.
    TRANSPORT_UNAVAILABLE = "transport_unavailable"
    #: :class:`SessionError`: the client or transport was closed while a request wanted it (a
    #: server shutting down); the server answers 503 with a short ``Retry-After``.
    CLIENT_CLOSED = "client_closed"
    #: :class:`AgentCrashError`: the acp transport gave up restarting its agent process; the
    #: server reports itself degraded (a single crash is not).
    AGENT_RESTARTS_EXHAUSTED = "agent_restarts_exhausted"
    #: :class:`NetworkError`: the peer did not negotiate HTTP/2 (ALPN); connect falls back to
    #: HTTP/1.1 only where ``CURSORPIPE_USE_HTTP2`` and the server's configuration allow it.
    NO_HTTP2 = "no_http2"


class CursorPipeError(Exception):
    """Base class of every error cursorpipe raises.

    Attributes:
        message: human-readable text, including what to do next.
        code: a stable machine-readable reason (for example ``"rate_limited"`` or Cursor's
            ``ERROR_*`` name without the prefix); the class's default when none is given.
            :class:`ErrorCode` lists the ones worth branching on.
        retryable: whether repeating the same request may succeed.
        retry_after: seconds the server asked us to wait, when known.
        request_id: the request id of the failed attempt, when known.
        transport: the transport that raised it (``"connect"``, ``"acp"``, ``"subprocess"``...).
    """

    default_code: str = "cursorpipe_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        request_id: str | None = None,
        transport: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.request_id = request_id
        self.transport = transport
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild without calling ``__init__`` again: subclasses whose constructor builds the
        # message (ModelNotFoundError) would otherwise wrap the message in a second one on unpickling
        # or ``copy.copy``. The attributes travel in ``__dict__``.
        return (_rebuild, (type(self), self.args), self.__dict__)

    @property
    def transport_failure(self) -> bool:
        """Whether this transport cannot serve requests right now (not the caller's fault, not
        Cursor's answer): true exactly for :class:`TransportFailureError`, on which the ``auto``
        strategy falls back to the next transport. Kept for compatibility; prefer ``isinstance``."""
        return isinstance(self, TransportFailureError)


def _rebuild(cls: type[CursorPipeError], args: tuple[Any, ...]) -> CursorPipeError:
    err = cls.__new__(cls, *args)
    err.args = args  # OSError (the TimeoutError family) leaves ``args`` to ``__init__``
    return err


class TransportError(CursorPipeError):
    """No answer came back: the network, the response stream, the local ``agent`` process or the
    protocol failed. The request itself may be fine; ``retryable`` says whether repeating it may."""

    default_code = "transport_error"


class TransportFailureError(TransportError):
    """This transport itself is broken (its agent is missing, crashed or did not start, or it spoke
    something that is not the protocol): another transport may serve the same request, so the
    ``auto`` strategy falls back on these, and only on these, before any output was produced."""

    default_code = "transport_failure"


class APIError(CursorPipeError):
    """Cursor (or the agent speaking for it) answered and refused: credentials, permission, rate
    and usage limits, sessions."""

    default_code = "api_error"


class CallerError(CursorPipeError):
    """What the caller asked for or supplied must change: configuration and parameters, the
    requested schema, the tool-round limit, a tool handler's speed."""

    default_code = "caller_error"


class RequestTimeoutError(CursorPipeError, TimeoutError):
    """A deadline passed: the request's ``timeout_s`` (``CURSORPIPE_REQUEST_TIMEOUT_S``) or a CLI
    command's. Its subclasses are more specific deadlines, each in its group of the tree. Formerly
    ``AgentTimeoutError`` (still an alias: it is raised on connect too, where no agent runs)."""

    default_code = "timeout"


#: The former name of :class:`RequestTimeoutError` (the same class).
AgentTimeoutError = RequestTimeoutError


class ConfigurationError(CallerError, ValueError):
    """Invalid configuration or request parameters (names the offending variable or field)."""

    default_code = "configuration_error"


class AgentNotFoundError(TransportFailureError):
    """The Cursor ``agent`` executable could not be found or started."""

    default_code = "agent_not_found"


class AuthenticationError(APIError):
    """Credentials are missing, invalid or expired."""

    default_code = "authentication_error"


class PermissionDeniedError(AuthenticationError):
    """Credentials are valid but the account may not do this (plan, team or region restriction)."""

    default_code = "permission_denied"


class AgentStartupError(TransportFailureError, RequestTimeoutError):
    """The agent process did not become ready within ``ACP_STARTUP_TIMEOUT_S``."""

    default_code = "agent_startup_timeout"


class StreamStalledError(TransportError, RequestTimeoutError):
    """The response stream went silent for longer than the stall limit."""

    default_code = "stream_stalled"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class ToolResultTimeoutError(CallerError, RequestTimeoutError):
    """A ``tool_handler`` did not return a tool call's result within ``tool_result_timeout_s``
    (``CURSORPIPE_TOOL_RESULT_TIMEOUT_S``); the run was cancelled. ``details["tool_name"]`` and
    ``details["tool_call_id"]`` name the call."""

    default_code = "tool_result_timeout"


class RateLimitError(APIError):
    """Cursor refused the request because of a rate limit; ``retry_after`` says when to retry."""

    default_code = "rate_limited"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class UsageLimitError(RateLimitError):
    """The account's usage or quota limit is reached; waiting a few seconds will not help."""

    default_code = "usage_limit"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", False)
        super().__init__(message, **kwargs)


class AgentCrashError(TransportFailureError):
    """The agent process exited unexpectedly. ``exit_code`` and ``stderr`` (tail, redacted) attached."""

    default_code = "agent_crashed"

    def __init__(
        self, message: str, *, exit_code: int | None = None, stderr: str = "", **kwargs: Any
    ) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)
        self.exit_code = exit_code
        self.stderr = stderr


class NetworkError(TransportError):
    """DNS, TLS, proxy or connection failure reaching Cursor."""

    default_code = "network_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class StreamDroppedError(NetworkError):
    """The response stream ended before the turn finished (no end-of-turn marker)."""

    default_code = "stream_dropped"


class ProtocolError(TransportFailureError):
    """Bytes or messages from the other side do not follow the protocol (malformed frame, bad JSON)."""

    default_code = "protocol_error"


class SessionError(APIError):
    """A session could not be created, was discarded, or is unusable."""

    default_code = "session_error"


class ModelNotFoundError(ConfigurationError):
    """The requested model is not available to this account; ``available`` lists valid ids."""

    default_code = "model_not_found"

    def __init__(self, model: str, available: list[str] | None = None, **kwargs: Any) -> None:
        self.model = model
        self.available = list(available or [])
        shown = ", ".join(self.available[:40]) if self.available else "run `cursorpipe models` to list them"
        message = kwargs.pop("message", None) or (
            f"Model {model!r} is not available to this Cursor account. Valid models: {shown}."
        )
        super().__init__(message, **kwargs)


class OutdatedClientError(ConfigurationError):
    """Cursor rejected the client version; upgrade cursorpipe (or the Cursor CLI)."""

    default_code = "outdated_client"


class StructuredOutputError(CallerError):
    """The model's answer did not parse or validate as the requested JSON, even after one repair
    round. ``raw`` holds the last answer."""

    default_code = "structured_output_invalid"

    def __init__(self, message: str, *, raw: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.raw = raw


class ToolLoopError(CallerError):
    """The model kept calling tools for more rounds than allowed in one request (the client-side
    tool loop of the emulated tool path, ``tool_handler`` on a transport without native tools)."""

    default_code = "tool_rounds_exceeded"
