"""The state one app instance keeps: its client, gate, sessions, metrics and lifecycle phase."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from starlette.requests import Request

from .._redact import redact
from ..client import CursorClient
from ..config import CursorPipeConfig
from ..errors import (
    AgentCrashError,
    AgentNotFoundError,
    AgentStartupError,
    AuthenticationError,
    ErrorCode,
    OutdatedClientError,
    PermissionDeniedError,
)
from ..types import ModelInfo
from ._body import header
from ._errors import APIError
from ._gate import Gate
from ._metrics import Metrics
from ._sessions import SessionRegistry
from ._sse import StreamEnding

if TYPE_CHECKING:
    from ._gateway._gateway import Gateway

__all__ = ["ServerState", "get_state", "request_timeout"]

Phase = Literal["starting", "ready", "draining"]

#: A degraded state with no new failure for this long is forgotten (readiness turns 200 again so
#: traffic can show whether the cause is gone).
DEGRADED_TTL_S = 60.0
_DEGRADING = (
    AuthenticationError,
    AgentCrashError,
    AgentStartupError,
    AgentNotFoundError,
    OutdatedClientError,
)

TIMEOUT_HEADER = "x-cursorpipe-timeout"
_TIMEOUT_NAME = TIMEOUT_HEADER.encode()


@dataclass(eq=False)
class ServerState:
    """Everything the routes share. ``phase`` drives /health/ready (not ready while starting or
    draining)."""

    config: CursorPipeConfig
    client: CursorClient
    owns_client: bool
    emulated: bool
    keepalive_s: float
    gate: Gate
    sessions: SessionRegistry
    metrics: Metrics
    phase: Phase = "starting"
    started_at: float = field(default_factory=time.time)
    warmup_error: str | None = None
    models: list[ModelInfo] | None = None
    models_at: float = 0.0
    #: The loop serving the app (set by the lifespan): signal handlers schedule work on it.
    loop: asyncio.AbstractEventLoop | None = None
    streams_ending: StreamEnding = field(default_factory=StreamEnding)
    #: (code, reason, monotonic time) of the last degrading failure; see note_failure
    degraded: tuple[str, str, float] | None = None
    #: The team gateway (per-caller credentials, shared sessions); ``None`` for the plain server.
    gateway: Gateway | None = None

    def begin_drain(self) -> None:
        """Stop taking new requests (SIGTERM); in-flight ones finish."""
        self.phase = "draining"
        self.gate.draining = True

    def note_failure(self, exc: BaseException) -> None:
        """Remember a failure that means "every request will fail like this" (credentials
        refused, the agent gone, cannot start): health and readiness report it until a request
        succeeds or ``DEGRADED_TTL_S`` passes without another one."""
        if isinstance(exc, PermissionDeniedError):
            return  # one model or feature refused, not the whole server
        if self.gateway is not None and self.gateway.passthrough and isinstance(exc, AuthenticationError):
            return  # one caller's key refused, not the server's credentials
        if isinstance(exc, _DEGRADING) and (
            not isinstance(exc, AgentCrashError) or exc.code == ErrorCode.AGENT_RESTARTS_EXHAUSTED
        ):
            self.degraded = (exc.code or type(exc).__name__, redact(exc.message), time.monotonic())

    def note_success(self) -> None:
        """A request succeeded: whatever was wrong is fixed."""
        self.degraded = None

    def problem(self) -> dict[str, object] | None:
        """The degraded state with its reason, from request outcomes and from the transport."""
        # The client creates its transport lazily; an uncreated one has nothing to report.
        transport = getattr(self.client, "_transport", None)
        live = getattr(transport, "health_problem", None)
        if isinstance(live, str) and live:
            return {"code": "agent_restarts_exhausted", "reason": redact(live)}
        if self.degraded is None:
            return None
        code, reason, since = self.degraded
        age = time.monotonic() - since
        if age > DEGRADED_TTL_S:
            self.degraded = None  # retry: the cause may be gone (a fixed key, a restarted agent)
            return None
        return {"code": code, "reason": reason, "since_s": round(age, 1)}

    def end_streams(self) -> None:
        """The drain time is up: open streams end with an error event and ``[DONE]``."""
        self.streams_ending.set()

    @property
    def owned_by(self) -> str | None:
        """``owned_by`` override for /v1/models (emulator mode labels every model)."""
        return "cursorpipe-emulator" if self.emulated else None


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState`."""
    state: ServerState = request.app.state.cursorpipe
    return state


def request_timeout(request: Request) -> float | None:
    """Per-request deadline from the ``X-CursorPipe-Timeout`` header (seconds), if any."""
    raw = header(request, _TIMEOUT_NAME)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 < value <= 86_400):
        raise APIError(
            400,
            f"{TIMEOUT_HEADER} must be a number of seconds between 0 and 86400.",
            param=TIMEOUT_HEADER,
            code="invalid_value",
        )
    return value
