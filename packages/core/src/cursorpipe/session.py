"""``CursorSession``: a conversation whose history Cursor keeps, so each turn sends only the new
message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol

from ._fold import collect
from .errors import SessionError
from .transports.base import Transport, TransportSession
from .types import (
    ChatMessage,
    CompletionResult,
    Event,
    TextDelta,
    ToolHandler,
    ToolSpec,
    TurnEnd,
    TurnRequest,
)

__all__ = ["CursorSession"]


class _RunTurn(Protocol):
    """The pipeline entry a session runs its turns on (``CursorClient.run_request``)."""

    def __call__(
        self,
        request: TurnRequest,
        *,
        session: TransportSession | None = None,
        stop: Sequence[str] | None = None,
        validate: bool = False,
    ) -> AsyncGenerator[Event, None]: ...


class CursorSession:
    """A multi-turn conversation. Turns run one at a time (a second caller waits its turn).

    Create with ``client.session(model)`` (context manager) or ``client.create_session(model)``
    and release with :meth:`discard` (idempotent).
    """

    def __init__(
        self,
        transport: Transport,
        handle: TransportSession,
        model: str,
        *,
        build: Callable[..., TurnRequest],
        run: _RunTurn,
        forget: Callable[[CursorSession], None],
    ) -> None:
        # The client hands over its request builder and pipeline entry (and how to forget this
        # session), so the session needs neither the client nor its module (issue 13).
        self._build = build
        self._run = run
        self._forget = forget
        self._transport = transport
        self._handle = handle
        self._model = model
        self._turns = 0
        self._discarded = False
        self._lock = asyncio.Lock()

    @property
    def model(self) -> str:
        """The session's model."""
        return self._model

    @property
    def session_id(self) -> str:
        """Cursor's id of this conversation."""
        return self._handle.id

    @property
    def turn_count(self) -> int:
        """Completed turns."""
        return self._turns

    @property
    def discarded(self) -> bool:
        """Whether :meth:`discard` was called."""
        return self._discarded

    @property
    def transport_name(self) -> str:
        """The transport holding this conversation."""
        return self._transport.name

    async def events(
        self,
        text: str,
        *,
        system: str | None = None,
        timeout_s: float | None = None,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
        validate: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """Send ``text`` as the next user message and stream the typed events of the answer.

        ``system`` is a system prompt for this turn: connect sends it the way the wire dialect says
        (a rule in the request context, live-dialect.md row 2), the agent transports as instructions
        at the head of the turn's text. Whether Cursor carries it over to later turns is not
        documented (connect.md §5.3), so pass it with every turn it should govern.

        ``tools``/``tool_choice``/``tool_handler``/``reasoning_effort`` as in
        :meth:`CursorClient.events`; ``validate=True`` gives a forced ``tool_choice`` answered
        without a call one repair round (a follow-up message in this conversation). In a session
        pass a ``tool_handler``: the next turn carries only a user text, so calls left for the caller
        (``stop_reason == "tool_calls"``) cannot be answered there."""
        if self._discarded:
            raise SessionError(f"Session {self.session_id} was discarded; open a new one.")
        request = self._build(
            self._model,
            [ChatMessage.of("user", text)],
            system=system,
            timeout_s=timeout_s,
            max_tokens=max_tokens,
            tools=tools,
            tool_choice=tool_choice,
            tool_handler=tool_handler,
            reasoning_effort=reasoning_effort,
        )
        async with self._lock:
            if self._discarded:
                raise SessionError(f"Session {self.session_id} was discarded; open a new one.")
            ended = False
            stream_events = self._run(request, session=self._handle, stop=stop, validate=validate)
            async with aclosing(stream_events) as stream:
                async for event in stream:
                    if isinstance(event, TurnEnd):
                        ended = True
                    yield event
            if ended:
                self._turns += 1

    async def prompt(
        self,
        text: str,
        *,
        timeout_s: float | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
    ) -> CompletionResult:
        """Send ``text`` and return the complete answer (history is kept by Cursor); tools and
        ``reasoning_effort`` as in :meth:`events`."""
        request = self._build(self._model, [ChatMessage.of("user", text)], timeout_s=timeout_s)
        return await collect(
            self.events(
                text,
                timeout_s=timeout_s,
                tools=tools,
                tool_choice=tool_choice,
                tool_handler=tool_handler,
                reasoning_effort=reasoning_effort,
            ),
            request,
            session_id=self.session_id,
        )

    async def stream_prompt(self, text: str, *, timeout_s: float | None = None) -> AsyncGenerator[str, None]:
        """Send ``text`` and stream the answer's text chunks."""
        async with aclosing(self.events(text, timeout_s=timeout_s)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and not event.notice and event.text:
                    yield event.text

    async def discard(self) -> None:
        """Release the conversation. Idempotent; later prompts raise ``SessionError``."""
        if self._discarded:
            return
        self._discarded = True
        self._forget(self)
        await self._transport.close_session(self._handle)

    async def __aenter__(self) -> CursorSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.discard()

    def __repr__(self) -> str:
        return f"CursorSession(model={self._model!r}, session_id={self.session_id!r}, turns={self._turns})"
