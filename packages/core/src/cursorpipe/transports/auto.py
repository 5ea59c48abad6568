"""``AutoTransport``: route each request to the best available transport, fall back on transport
failures only.

Order (issue 4): **connect** when usable credentials exist (an API key or access token in the
configuration, or a stored Cursor CLI login found by :func:`cursorpipe.auth.discover_credential`),
then **acp** when the ``agent`` binary is found, then **subprocess**. A request moves to the next
candidate only when the current one fails with a ``TransportFailureError`` (``transport_failure``
true: crash, start-up timeout, agent not found, protocol error) *and* before any output reached
the caller; user errors (bad model, authentication, usage limit, bad input) are raised at once.
A transport that failed that way is skipped for :data:`DEMOTION_S` seconds.

The choice and every fallback are logged (logger ``cursorpipe.auto``) and visible to callers: the
stream's :class:`~cursorpipe.types.TransportInfo` names the transport that answered and the ones
that failed before it (``CompletionResult.transport`` / ``.fallback_from``). Sessions stay on the
transport that opened them. Inner transports are created on first need through
:func:`cursorpipe.transports._factory.create_transport` (or an injected ``factory``); creating one starts
nothing (no process, no connection) until a request or ``start()`` runs on it, and every candidate
is created when :attr:`AutoTransport.capabilities` is first read, since those are combined.

The original cursorpipe routed by model name ("auto" → acp, named model → subprocess) because it
believed acp could not switch models (acp.md §1.1, §1.5); that belief is outdated, so routing here
depends only on what is available.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TypeVar

from ..config import CursorPipeConfig, Strategy
from ..errors import ConfigurationError, CursorPipeError, ErrorCode, SessionError
from ..types import Event, ModelInfo, TransportInfo, TurnRequest
from ._factory import create_transport
from ._process import resolve_executable
from .base import Transport, TransportCapabilities, TransportSession

__all__ = ["DEMOTION_S", "AutoSession", "AutoTransport", "TransportFactory"]

log = logging.getLogger("cursorpipe.auto")

#: How long a transport that just failed at transport level is skipped by later requests.
DEMOTION_S = 30.0

T = TypeVar("T")
TransportFactory = Callable[[CursorPipeConfig, Strategy], Transport]


@dataclass(eq=False)
class AutoSession:
    """A session opened through ``auto``: the inner transport's session and where it lives."""

    inner: TransportSession
    strategy: Strategy
    transport_name: str

    @property
    def id(self) -> str:
        """The inner session's id."""
        return self.inner.id

    @property
    def model(self) -> str:
        """The session's model."""
        return self.inner.model


def _default_factory(config: CursorPipeConfig, strategy: Strategy) -> Transport:
    return create_transport(config, strategy)


def _has_credentials(config: CursorPipeConfig) -> bool:
    if config.has_credentials:
        return True
    try:
        from ..auth import discover_credential
    except ImportError:  # pragma: no cover - auth is part of the core package
        return False
    try:
        return discover_credential(config) is not None
    except Exception as exc:  # a broken credential store must not break routing
        log.debug("cursorpipe auto: credential discovery failed: %s", type(exc).__name__)
        return False


def _binary_found(config: CursorPipeConfig) -> bool:
    try:
        resolve_executable(config.agent_bin)
    except CursorPipeError:
        return False
    return True


class AutoTransport:
    """Routes requests over connect → acp → subprocess. See the module docstring."""

    name = "auto"

    def __init__(
        self,
        config: CursorPipeConfig | None = None,
        *,
        factory: TransportFactory | None = None,
        order: Sequence[Strategy] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config if config is not None else CursorPipeConfig()
        self._factory = factory or _default_factory
        self._order: list[Strategy] | None = list(order) if order is not None else None
        self._clock = clock
        self._inner: dict[Strategy, Transport] = {}
        self._unavailable: set[Strategy] = set()
        self._demoted: dict[Strategy, float] = {}
        self._announced: set[Strategy] = set()
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # routing plan
    # ------------------------------------------------------------------------------------------
    @property
    def plan(self) -> list[Strategy]:
        """The candidates in order of preference (computed once, on first use)."""
        if self._order is None:
            order: list[Strategy] = []
            reasons: list[str] = []
            if _has_credentials(self._config):
                order.append(Strategy.CONNECT)
                reasons.append("credentials found")
            if _binary_found(self._config):
                order += [Strategy.ACP, Strategy.SUBPROCESS]
                reasons.append(f"{self._config.agent_bin!r} found")
            if not order:
                # Nothing usable. The connect transport then raises AuthenticationError saying how to
                # set CURSOR_API_KEY or log in (issue 2: a server without credentials answers chat
                # requests with a clear authentication error), rather than "agent not found".
                order = [Strategy.CONNECT]
                reasons.append("no credentials and no agent binary")
            self._order = order
            log.info("cursorpipe auto: candidates %s (%s)", [s.value for s in order], "; ".join(reasons))
        return list(self._order)

    def _candidates(self) -> list[Strategy]:
        plan = [s for s in self.plan if s not in self._unavailable]
        now = self._clock()
        healthy = [s for s in plan if self._demoted.get(s, 0.0) <= now]
        return healthy or plan

    def _get(self, strategy: Strategy, *, announce: bool = True) -> Transport | None:
        """The inner transport, created on first need; None if this installation lacks it."""
        if self._closed:
            raise SessionError("This transport is closed; create a new client.", transport=self.name)
        transport = self._inner.get(strategy)
        if transport is None:
            try:
                transport = self._factory(self._config, strategy)
            except (ConfigurationError, ImportError, AttributeError) as exc:
                # A transport missing from this installation (or not built yet) is skipped.
                if isinstance(exc, ConfigurationError) and exc.code != ErrorCode.TRANSPORT_UNAVAILABLE:
                    raise
                log.warning("cursorpipe auto: the %s transport is not available (%s)", strategy.value, exc)
                self._unavailable.add(strategy)
                return None
            self._inner[strategy] = transport
        if announce and strategy not in self._announced:
            self._announced.add(strategy)
            log.info("cursorpipe auto: routing to the %s transport", transport.name)
        return transport

    def _failed(self, strategy: Strategy, exc: CursorPipeError, nxt: str) -> None:
        self._demoted[strategy] = self._clock() + DEMOTION_S
        log.warning(
            "cursorpipe auto: %s failed at transport level (%s: %s); falling back to %s",
            strategy.value,
            type(exc).__name__,
            exc.code,
            nxt,
        )

    # ------------------------------------------------------------------------------------------
    # Transport protocol
    # ------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> TransportCapabilities:
        """The primary candidate's capabilities, with ``native_tools``/``images``/``real_usage``
        only when *every* candidate has them (a fallback must not silently drop tools or images)."""
        transports = [t for t in (self._get(s, announce=False) for s in self._candidates()) if t is not None]
        if not transports:
            return TransportCapabilities()
        caps = [t.capabilities for t in transports]
        first = caps[0]
        return TransportCapabilities(
            sessions=first.sessions,
            native_tools=all(c.native_tools for c in caps),
            thinking=first.thinking,
            real_usage=all(c.real_usage for c in caps),
            images=all(c.images for c in caps),
            system_prompt=all(c.system_prompt for c in caps),
        )

    @property
    def transports(self) -> dict[str, Transport]:
        """The inner transports created so far, by name (diagnostics and tests)."""
        return {t.name: t for t in self._inner.values()}

    async def start(self, *, pool_size: int = 0) -> None:
        """Start the first candidate that starts (falling back on transport failures)."""

        async def start_on(transport: Transport) -> None:
            await transport.start(pool_size=pool_size)

        await self._with_fallback(start_on, "start")

    async def open_session(self, model: str) -> TransportSession:
        """Open the session on the first working candidate; it stays there for its lifetime."""

        async def open_on(transport: Transport) -> TransportSession:
            return await transport.open_session(model)

        inner, strategy = await self._with_fallback(open_on, "open_session")
        transport = self._inner[strategy]
        return AutoSession(inner=inner, strategy=strategy, transport_name=transport.name)

    async def close_session(self, session: TransportSession) -> None:
        """Close the session on the transport that opened it. Idempotent."""
        if not isinstance(session, AutoSession):
            return
        transport = self._inner.get(session.strategy)
        if transport is not None:
            await transport.close_session(session.inner)

    async def list_models(self) -> list[ModelInfo]:
        """The models of the first working candidate."""

        async def models_of(transport: Transport) -> list[ModelInfo]:
            return await transport.list_models()

        models, _ = await self._with_fallback(models_of, "list_models")
        return models

    async def aclose(self) -> None:
        """Close every inner transport created so far. Idempotent."""
        if self._closed:
            return
        self._closed = True
        inner, self._inner = list(self._inner.values()), {}
        for transport in inner:
            try:
                await transport.aclose()
            except Exception as exc:
                log.warning("cursorpipe auto: closing %s failed: %s", transport.name, exc)

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run the turn on the session's transport, or on the first candidate that works."""
        if session is not None:
            return self._run_session(request, session)
        return self._run(request)

    # ------------------------------------------------------------------------------------------
    # internals
    # ------------------------------------------------------------------------------------------
    async def _with_fallback(
        self, call: Callable[[Transport], Awaitable[T]], what: str
    ) -> tuple[T, Strategy]:
        """``call`` on the first candidate that does not fail at transport level."""
        failed: list[str] = []
        candidates = self._candidates()
        for index, strategy in enumerate(candidates):
            transport = self._get(strategy)
            if transport is None:
                continue
            try:
                return await call(transport), strategy
            except CursorPipeError as exc:
                remaining = [s for s in candidates[index + 1 :] if s not in self._unavailable]
                if not exc.transport_failure or not remaining:
                    if failed:
                        exc.details.setdefault("fallback_from", tuple(failed))
                    if exc.transport is None:
                        exc.transport = transport.name
                    raise
                log.debug("cursorpipe auto: %s failed on %s", what, transport.name)
                self._failed(strategy, exc, remaining[0].value)
                failed.append(transport.name)
        raise _none_available()

    async def _run_session(
        self, request: TurnRequest, session: TransportSession
    ) -> AsyncGenerator[Event, None]:
        if not isinstance(session, AutoSession):
            raise SessionError("This session was not opened by the auto transport.", transport=self.name)
        transport = self._inner.get(session.strategy)
        if transport is None:
            raise SessionError(
                f"Session {session.id} belongs to a closed transport; open a new one.", transport=self.name
            )
        async with aclosing(transport.run(request, session=session.inner)) as stream:
            async for event in stream:
                yield event

    async def _run(self, request: TurnRequest) -> AsyncGenerator[Event, None]:
        failed: list[str] = []
        candidates = self._candidates()
        for index, strategy in enumerate(candidates):
            transport = self._get(strategy)
            if transport is None:
                continue
            info: TransportInfo | None = None
            committed = False
            try:
                async with aclosing(transport.run(request)) as stream:
                    async for event in stream:
                        if not committed:
                            if isinstance(event, TransportInfo):
                                info = event
                                continue
                            committed = True
                            info = TransportInfo(
                                transport=transport.name,
                                model=info.model if info is not None else request.model,
                                session_id=info.session_id if info is not None else None,
                                fallback_from=tuple(failed)
                                + (info.fallback_from if info is not None else ()),
                            )
                            yield info
                        elif isinstance(event, TransportInfo) and info is not None:
                            # A later update (the routed model): keep the fallback record.
                            event = replace(info, model=event.model or info.model)
                        yield event
                return
            except CursorPipeError as exc:
                remaining = [s for s in candidates[index + 1 :] if s not in self._unavailable]
                if committed or not exc.transport_failure or not remaining:
                    if failed:
                        exc.details.setdefault("fallback_from", tuple(failed))
                    if exc.transport is None:
                        exc.transport = transport.name
                    raise
                self._failed(strategy, exc, remaining[0].value)
                failed.append(transport.name)
        raise _none_available()


def _none_available() -> ConfigurationError:
    return ConfigurationError(
        "No transport is available in this installation of cursorpipe for the auto strategy.",
        code="transport_unavailable",
    )
