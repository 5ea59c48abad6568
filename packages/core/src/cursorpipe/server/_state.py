"""The state one app instance keeps: its client, gate, sessions, metrics and lifecycle phase."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from starlette.requests import Request

from ..client import CursorClient
from ..config import CursorPipeConfig
from ..types import ModelInfo
from ._errors import APIError
from ._metrics import Metrics
from ._runs import Gate
from ._sessions import SessionRegistry

__all__ = ["ServerState", "get_state", "request_timeout"]

Phase = Literal["starting", "ready", "draining"]

TIMEOUT_HEADER = "x-cursorpipe-timeout"


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

    def begin_drain(self) -> None:
        """Stop taking new requests (SIGTERM); in-flight ones finish."""
        self.phase = "draining"
        self.gate.draining = True

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
    raw = request.headers.get(TIMEOUT_HEADER)
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
