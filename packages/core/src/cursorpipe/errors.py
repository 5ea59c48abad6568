"""The one error tree of cursorpipe.

Every transport maps its native failures (HTTP status, Connect code and Cursor ``ErrorDetails``,
JSON-RPC error, CLI stderr and exit code) onto these classes at its own edge, chaining the cause.
``asyncio.CancelledError`` is never caught and converted. Every message says what to do next, and
no message ever contains a credential.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentCrashError",
    "AgentNotFoundError",
    "AgentStartupError",
    "AgentTimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "CursorPipeError",
    "ModelNotFoundError",
    "NetworkError",
    "OutdatedClientError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "SessionError",
    "StreamDroppedError",
    "StreamStalledError",
    "StructuredOutputError",
    "ToolLoopError",
    "ToolResultTimeoutError",
    "UsageLimitError",
]


class CursorPipeError(Exception):
    """Base class of every error cursorpipe raises.

    Attributes:
        message: human-readable text, including what to do next.
        code: a stable machine-readable code (for example ``"rate_limited"`` or Cursor's
            ``ERROR_*`` name without the prefix), or ``None``.
        retryable: whether repeating the same request may succeed.
        retry_after: seconds the server asked us to wait, when known.
        request_id: the request id of the failed attempt, when known.
        transport: the transport that raised it (``"connect"``, ``"acp"``, ``"subprocess"``...).
    """

    #: Errors that mean "this transport cannot serve requests right now" (not a user error);
    #: the ``auto`` strategy falls back to the next transport only on these.
    transport_failure: bool = False
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


class ConfigurationError(CursorPipeError, ValueError):
    """Invalid configuration or request parameters (names the offending variable or field)."""

    default_code = "configuration_error"


class AgentNotFoundError(CursorPipeError):
    """The Cursor ``agent`` executable could not be found or started."""

    transport_failure = True
    default_code = "agent_not_found"


class AuthenticationError(CursorPipeError):
    """Credentials are missing, invalid or expired."""

    default_code = "authentication_error"


class PermissionDeniedError(AuthenticationError):
    """Credentials are valid but the account may not do this (plan, team or region restriction)."""

    default_code = "permission_denied"


class AgentTimeoutError(CursorPipeError, TimeoutError):
    """A request (or the agent's start-up) took longer than its deadline."""

    default_code = "timeout"


class AgentStartupError(AgentTimeoutError):
    """The agent process did not become ready within ``ACP_STARTUP_TIMEOUT_S``."""

    transport_failure = True
    default_code = "agent_startup_timeout"


class StreamStalledError(AgentTimeoutError):
    """The response stream went silent for longer than the stall limit."""

    default_code = "stream_stalled"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class ToolResultTimeoutError(AgentTimeoutError):
    """A ``tool_handler`` did not return a tool call's result within ``tool_result_timeout_s``
    (``CURSORPIPE_TOOL_RESULT_TIMEOUT_S``); the run was cancelled. ``details["tool_name"]`` and
    ``details["tool_call_id"]`` name the call."""

    default_code = "tool_result_timeout"


class RateLimitError(CursorPipeError):
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


class AgentCrashError(CursorPipeError):
    """The agent process exited unexpectedly. ``exit_code`` and ``stderr`` (tail, redacted) attached."""

    transport_failure = True
    default_code = "agent_crashed"

    def __init__(
        self, message: str, *, exit_code: int | None = None, stderr: str = "", **kwargs: Any
    ) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)
        self.exit_code = exit_code
        self.stderr = stderr


class NetworkError(CursorPipeError):
    """DNS, TLS, proxy or connection failure reaching Cursor."""

    default_code = "network_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)


class StreamDroppedError(NetworkError):
    """The response stream ended before the turn finished (no end-of-turn marker)."""

    default_code = "stream_dropped"


class ProtocolError(CursorPipeError):
    """Bytes or messages from the other side do not follow the protocol (malformed frame, bad JSON)."""

    transport_failure = True
    default_code = "protocol_error"


class SessionError(CursorPipeError):
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


class StructuredOutputError(CursorPipeError):
    """The model's answer did not parse or validate as the requested JSON, even after one repair
    round. ``raw`` holds the last answer."""

    default_code = "structured_output_invalid"

    def __init__(self, message: str, *, raw: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.raw = raw


class ToolLoopError(CursorPipeError):
    """The model kept calling tools for more rounds than allowed in one request (the client-side
    tool loop of the emulated tool path, ``tool_handler`` on a transport without native tools)."""

    default_code = "tool_rounds_exceeded"
