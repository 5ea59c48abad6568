"""The transport protocol every implementation follows (design.md lesson 1).

A transport turns a :class:`~cursorpipe.types.TurnRequest` into a stream of transport-neutral
events ending with :class:`~cursorpipe.types.TurnEnd`. Contract for ``run``:

* it is an async generator; the consumer may stop iterating early or be cancelled at any point,
  and the transport then cancels the upstream run (Cursor's cancel action, ``session/cancel``, or
  killing the process) in its ``finally`` and never leaks tasks, sockets or processes;
* it yields ``TransportInfo`` first, then deltas, then at most one ``UsageEvent``, then exactly
  one ``TurnEnd`` as the last event; a stream that stops without ``TurnEnd`` is an error the
  transport raises itself (``StreamDroppedError``); a later ``TransportInfo`` (same transport and
  session) reports the model that actually answered once the service says so (connect's
  ``routed_model``), and consumers keep the latest;
* every failure is raised as a :mod:`cursorpipe.errors` class, cause chained; ``CancelledError``
  propagates untouched;
* ``session`` is ``None`` for a stateless turn (``request.messages`` holds the whole conversation)
  or a session returned by ``open_session`` (``request.messages`` holds only the new messages).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..types import Event, ModelInfo, TurnRequest

__all__ = ["Transport", "TransportCapabilities", "TransportSession"]


@dataclass(frozen=True, slots=True)
class TransportCapabilities:
    """What a transport can do natively."""

    sessions: bool = True
    """Server-side conversation state (each session turn sends only the new message)."""
    native_tools: bool = False
    """Caller-defined tools travel over a real tool channel (not emulated in the prompt)."""
    thinking: bool = True
    """Thinking deltas are surfaced."""
    real_usage: bool = False
    """Token counts come from Cursor rather than estimates."""
    images: bool = False
    """Image inputs are delivered to the model."""
    system_prompt: bool = True
    """A system prompt reaches the model (natively or by a documented mechanism)."""


@runtime_checkable
class TransportSession(Protocol):
    """A conversation held by a transport. Opaque to the client except for these fields."""

    @property
    def id(self) -> str:
        """Stable id of the conversation (Cursor's conversation/session id)."""

    @property
    def model(self) -> str:
        """The model the session was opened for."""


@runtime_checkable
class Transport(Protocol):
    """One way of reaching Cursor's models."""

    #: Short name used in logs, results and errors: "connect", "acp", "subprocess", "mock".
    name: str

    @property
    def capabilities(self) -> TransportCapabilities:
        """What this transport supports natively."""

    async def start(self, *, pool_size: int = 0) -> None:
        """Prepare for requests (process, token, connection, ``pool_size`` ready sessions).

        Idempotent. Requests work without calling it; it only removes the cold start.
        """

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run one turn and stream its events (see the module docstring for the contract)."""

    async def open_session(self, model: str) -> TransportSession:
        """Create a conversation whose history the transport (or Cursor) keeps."""

    async def close_session(self, session: TransportSession) -> None:
        """Release a conversation. Idempotent."""

    async def list_models(self) -> list[ModelInfo]:
        """Models the account can use."""

    async def aclose(self) -> None:
        """Release every resource (processes, sockets, tasks). Idempotent."""
