"""``MockTransport``: a scriptable transport for tests and for users' own offline tests.

By default it answers every turn with ``"echo: <last user text>"`` streamed word by word, keeps
per-session history and reports usage. Script it with :meth:`MockTransport.queue` (the next turns'
replies: a string, a list of events and exceptions, or an exception) or a ``script`` callable.
It records every request, session and cancellation so tests can assert on them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelNotFoundError, SessionError
from ..types import (
    ChatMessage,
    Event,
    ModelInfo,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)
from .base import TransportCapabilities, TransportSession

__all__ = ["MockSession", "MockTransport", "ScriptItem"]

ScriptItem = str | BaseException | Sequence[Event | BaseException]
Script = Callable[[TurnRequest, "MockSession | None"], ScriptItem]

_DEFAULT_MODELS = (
    ModelInfo(id="auto", display_name="Auto", aliases=("default",), context_window=200_000),
    ModelInfo(id="mock-fast", display_name="Mock Fast", context_window=128_000),
    ModelInfo(
        id="mock-thinking", display_name="Mock Thinking", context_window=200_000, supports_thinking=True
    ),
)


@dataclass(eq=False)
class MockSession:
    """A conversation held by the mock."""

    id: str
    model: str
    history: list[ChatMessage] = field(default_factory=list)
    closed: bool = False


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [text]


class MockTransport:
    """A transport that needs nothing and does exactly what the test scripts."""

    name = "mock"
    #: Holds nothing tied to an event loop: usable from any loop (see CursorClient._check_loop).
    loop_bound = False

    def __init__(
        self,
        *,
        script: Script | None = None,
        models: Iterable[ModelInfo] | None = None,
        thinking: str = "",
        delay_s: float = 0.0,
        first_delay_s: float = 0.0,
        capabilities: TransportCapabilities | None = None,
        name: str = "mock",
        strict_models: bool = False,
    ) -> None:
        self.name = name
        self._script = script
        self._queue: deque[ScriptItem] = deque()
        self.models = list(models or _DEFAULT_MODELS)
        self.thinking = thinking
        self.delay_s = delay_s
        self.first_delay_s = first_delay_s
        self.strict_models = strict_models
        self._caps = capabilities or TransportCapabilities(sessions=True, real_usage=True, images=True)
        self._ids = itertools.count(1)
        self.requests: list[TurnRequest] = []
        self.sessions: list[MockSession] = []
        self.started_with: list[int] = []
        self.cancelled = 0
        self.completed = 0
        self.closed = False
        self.running = 0

    # -- scripting ---------------------------------------------------------------------------
    def queue(self, *items: ScriptItem) -> None:
        """Script the next turns, one item per turn, consumed in order before the default."""
        self._queue.extend(items)

    # -- Transport protocol --------------------------------------------------------------------
    @property
    def capabilities(self) -> TransportCapabilities:
        """Configured capabilities."""
        return self._caps

    async def start(self, *, pool_size: int = 0) -> None:
        """Record the warm-up request."""
        self.started_with.append(pool_size)

    async def open_session(self, model: str) -> TransportSession:
        """Create a mock conversation."""
        self._check_model(model)
        session = MockSession(id=f"mock-session-{next(self._ids)}", model=model)
        self.sessions.append(session)
        return session

    async def close_session(self, session: TransportSession) -> None:
        """Mark the conversation closed."""
        if isinstance(session, MockSession):
            session.closed = True

    async def list_models(self) -> list[ModelInfo]:
        """The configured models."""
        return list(self.models)

    async def aclose(self) -> None:
        """Mark the transport closed."""
        self.closed = True

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Stream the scripted (or default) answer."""
        return self._run(request, session)

    # -- internals -----------------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if self.strict_models and not any(m.matches(model) for m in self.models):
            raise ModelNotFoundError(model, [m.id for m in self.models], transport=self.name)

    def _default_reply(self, request: TurnRequest, session: MockSession | None) -> str:
        users = [m for m in request.messages if m.role == "user"]
        last = users[-1].text if users else ""
        return f"echo: {last}"

    async def _run(
        self, request: TurnRequest, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        if self.closed:
            raise SessionError("the mock transport is closed", transport=self.name)
        mock_session = session if isinstance(session, MockSession) else None
        if mock_session is not None and mock_session.closed:
            raise SessionError(f"session {mock_session.id} was discarded", transport=self.name)
        self._check_model(request.model)
        self.requests.append(request)
        item = self._next_item(request, mock_session)
        self.running += 1
        finished = False
        try:
            yield TransportInfo(
                transport=self.name, model=request.model, session_id=mock_session.id if mock_session else None
            )
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            text: list[str] = []
            ended = False
            for ev in self._events_of(item):
                if isinstance(ev, BaseException):
                    raise ev
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if isinstance(ev, TextDelta) and not ev.notice:
                    text.append(ev.text)
                ended = ended or isinstance(ev, TurnEnd)
                yield ev
            if not ended:
                usage = self._usage(request, mock_session, "".join(text))
                yield UsageEvent(usage)
                yield TurnEnd("stop", usage)
            if mock_session is not None:
                mock_session.history.extend(request.messages)
                mock_session.history.append(ChatMessage.of("assistant", "".join(text)))
            finished = True
            self.completed += 1
        finally:
            self.running -= 1
            if not finished:
                self.cancelled += 1

    def _next_item(self, request: TurnRequest, session: MockSession | None) -> ScriptItem:
        if self._queue:
            return self._queue.popleft()
        if self._script is not None:
            return self._script(request, session)
        return self._default_reply(request, session)

    def _events_of(self, item: ScriptItem) -> list[Event | BaseException]:
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, str):
            return list(item)
        events: list[Event | BaseException] = [ThinkingDelta(self.thinking)] if self.thinking else []
        events.extend(TextDelta(w) for w in _words(item))
        return events

    @staticmethod
    def _usage(request: TurnRequest, session: MockSession | None, output: str) -> Usage:
        inputs = "".join(m.text for m in request.messages)
        if session is not None:
            inputs = "".join(m.text for m in session.history) + inputs
        return Usage(input_tokens=estimate_tokens(inputs), output_tokens=estimate_tokens(output))


def events_for(text: str, *, thinking: str = "", usage: Usage | None = None) -> list[Any]:
    """Events of a complete turn answering ``text`` (a helper for scripting)."""
    out: list[Any] = [ThinkingDelta(thinking)] if thinking else []
    out.extend(TextDelta(w) for w in _words(text))
    u = usage or Usage(output_tokens=estimate_tokens(text))
    out += [UsageEvent(u), TurnEnd("stop", u)]
    return out
