"""``CursorClient``: the public face of the event pipeline, its lifecycle and request accounting.

Every public request method is a view over one pipeline (``_pipeline/``), reached through
:meth:`CursorClient.run_request`: request building, retries with the turn's deadline, emulated
tools on transports without native ones, the output limit and the validation stage are stages
there; the client only picks the transport, counts requests in flight and folds events into
results (``complete()`` collects the validated events).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._fold import collect
from ._limits import DEFAULT_MAX_TOKENS
from ._pipeline import Pipeline, RetryPolicy
from ._pipeline.request import RequestBuilder, model_name
from .errors import SessionError
from .session import CursorSession
from .transports.base import Transport, TransportSession
from .types import (
    ChatMessage,
    CompletionResult,
    Event,
    ModelInfo,
    TextDelta,
    ToolHandler,
    ToolSpec,
    TurnRequest,
)

if TYPE_CHECKING:
    from .config import CursorPipeConfig

__all__ = ["CursorClient", "collect_result"]

log = logging.getLogger("cursorpipe")


class CursorClient(RequestBuilder):
    """Async client for the models of a Cursor subscription.

    ``CursorClient()`` reads :class:`CursorPipeConfig` from the environment and ``.env``. Use it as
    an async context manager, or call :meth:`close` when done. A client is bound to the event loop
    it first runs on (sync code goes through :class:`cursorpipe.SyncBridge`).

    Pass ``transport=`` to use a specific :class:`~cursorpipe.transports.base.Transport` instance
    (for example ``MockTransport`` in tests) instead of the one ``config.strategy`` selects.
    """

    def __init__(self, config: CursorPipeConfig | None = None, *, transport: Transport | None = None) -> None:
        if config is None:
            from .config import CursorPipeConfig

            config = CursorPipeConfig()
        self._config = config
        self._transport: Transport | None = transport
        self._pipeline: Pipeline | None = None
        self._transport_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = 0
        self._closed = False
        self._sessions: set[CursorSession] = set()

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    async def __aenter__(self) -> CursorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def config(self) -> CursorPipeConfig:
        """The configuration in use."""
        return self._config

    @property
    def active_requests(self) -> int:
        """Requests in flight through this client (generate, chat, stream, events, session turns)."""
        return self._active

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def transport_name(self) -> str | None:
        """Name of the transport in use, once one was created."""
        return self._transport.name if self._transport is not None else None

    async def transport(self) -> Transport:
        """The transport in use, created on first need from ``config.strategy``."""
        if self._closed:
            raise SessionError("This CursorClient is closed; create a new one.", code="client_closed")
        if self._transport is not None:
            self._check_loop(self._transport)
            return self._transport
        if self._transport_lock is None:
            self._transport_lock = asyncio.Lock()
        async with self._transport_lock:
            if self._transport is None:
                from ._routing import create_transport

                self._transport = create_transport(self._config)
                log.info("cursorpipe: using the %s transport", self._transport.name)
            self._check_loop(self._transport)
            return self._transport

    async def _stages(self) -> Pipeline:
        """The pipeline over the transport in use (built once, with the transport)."""
        pipeline = self._pipeline
        transport = await self.transport()
        if pipeline is None or pipeline.transport is not transport:
            config = self._config
            pipeline = self._pipeline = Pipeline(
                transport,
                RetryPolicy(max_retries=config.max_retries, default_timeout_s=config.request_timeout_s),
                tool_result_timeout_s=config.tool_result_timeout_s,
                profiling=config.enable_profiling,
            )
        return pipeline

    def _check_loop(self, transport: Transport) -> None:
        """A transport's connections and pipes belong to the loop it first ran on: on another loop
        they would hang until timeouts and retries gave up (20-31 s, issue 12), so refuse at once.
        Transports without loop-bound resources say so with ``loop_bound = False``."""
        if not getattr(transport, "loop_bound", True):
            return
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise SessionError(
                "This CursorClient was first used on another event loop, which owns its connections "
                "and agent processes; create one client per event loop (or use the sync methods, "
                "which always run on the client's own loop).",
                code="client_loop_mismatch",
            )

    async def warmup(self, pool_size: int = 5) -> None:
        """Pre-start what the transport needs (process, token, connection, ``pool_size`` sessions)
        and run the garbage collection start-up left due, so the first real request pays no cold
        start."""
        transport = await self.transport()
        await transport.start(pool_size=max(0, pool_size))
        # Start-up (imports, handshakes) leaves the cyclic collector a full pass due; run it now,
        # at start-up, rather than in the first request (issue 16: a 20-30 ms pause measured in
        # the first connect turn after warmup).
        gc.collect()

    async def close(self) -> None:
        """Discard open sessions and release the transport's processes and sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for session in list(self._sessions):
            with contextlib.suppress(Exception):
                await session.discard()
        if self._transport is not None:
            await self._transport.aclose()

    # ------------------------------------------------------------------------------------------
    # requests
    # ------------------------------------------------------------------------------------------
    async def events(
        self,
        model: str | None = None,
        messages: Sequence[Mapping[str, Any] | ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = 0,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        timeout_s: float | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
        validate: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """Stream the typed, transport-neutral events of one stateless turn.

        ``response_format`` (OpenAI shape) asks for JSON; with ``validate=True`` the answer is also
        validated and repaired as in :meth:`complete`, and a forced ``tool_choice`` answered without
        a call gets its repair round (the events then arrive once the answer is judged, with a
        ``ParsedOutput`` before ``TurnEnd`` for a ``response_format``).

        Tools (``tools``, OpenAI function shape; ``tool_choice`` auto/none/required/a name):
        without ``tool_handler`` the turn ends at the model's tool calls (``ToolCallDelta`` events,
        ``ToolCallEvent`` events, then ``TurnEnd(stop_reason="tool_calls")``) and the caller sends the
        results in the next request's messages (assistant ``tool_calls`` + ``tool`` messages). With
        ``tool_handler`` (``async (ToolCall) -> str``) each call is answered inside the turn and the
        turn goes on to the final answer (natively on connect, by a client-side loop elsewhere).

        Yields ``TransportInfo`` first, then ``TextDelta`` / ``ThinkingDelta`` / tool-call events,
        one ``UsageEvent`` and a final ``TurnEnd``. ``stop`` and ``max_tokens`` are enforced on the
        stream (``TurnEnd.stop_reason`` is then ``"stop"`` or ``"length"``).
        """
        request = self._request_from(locals())
        async with aclosing(self.run_request(request, stop=stop, validate=validate)) as stream:
            async for event in stream:
                yield event

    async def run_request(
        self,
        request: TurnRequest,
        *,
        session: TransportSession | None = None,
        stop: Sequence[str] | None = None,
        tool_handler: ToolHandler | None = None,
        validate: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """Run a prepared :class:`TurnRequest` through the whole pipeline (used by sessions and
        integrations; most callers want :meth:`events`). ``tool_handler`` overrides
        ``request.tool_handler`` (see :meth:`events`). ``validate=True`` adds the validation stage:
        a forced ``tool_choice`` answered without a call gets one repair round, a
        ``request.response_format`` answer is validated (one repair round, then
        ``StructuredOutputError``) and followed by a ``ParsedOutput`` event; the events of a
        rejected round are withheld and the usage of every round is summed."""
        pipeline = await self._stages()
        request = self._with_handler(request, tool_handler)
        self._active += 1
        try:
            async with aclosing(
                pipeline.run(request, session=session, stop=stop, validate=validate)
            ) as stream:
                async for event in stream:
                    yield event
        finally:
            self._active -= 1

    def _with_handler(self, request: TurnRequest, tool_handler: ToolHandler | None) -> TurnRequest:
        if tool_handler is not None:
            request = replace(request, tool_handler=tool_handler)
        if request.tool_handler is not None and request.tool_result_timeout_s is None:
            request = replace(request, tool_result_timeout_s=self._config.tool_result_timeout_s)
        return request

    async def _collect(self, request: TurnRequest, stop: Sequence[str] | None) -> CompletionResult:
        """``collect(run_request(..., validate=True))`` without the ``run_request`` generator
        between the pipeline and the fold (issue 16: a generator layer costs on every event)."""
        pipeline = await self._stages()
        self._active += 1
        try:
            return await collect(pipeline.run(request, stop=stop, validate=True), request)
        finally:
            self._active -= 1

    async def complete(
        self,
        model: str | None = None,
        messages: Sequence[Mapping[str, Any] | ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = 0,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        stop: Sequence[str] | None = None,
        timeout_s: float | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
    ) -> CompletionResult:
        """Run one stateless turn and return the full :class:`CompletionResult`.

        ``max_tokens`` and ``stop`` are enforced on the stream (Cursor has neither parameter):
        a cut answer has ``stop_reason == "length"`` (or ``"stop"``); ``max_tokens=None`` means no
        limit; a cut by the default 2048 also logs a WARNING. Output tokens are counted with
        Cursor's own running count where the transport streams one (connect), else estimated at
        four characters per token.

        Tools work as in :meth:`events`; ``result.tool_calls`` holds the calls the caller must
        answer (``stop_reason == "tool_calls"``), never those a ``tool_handler`` answered. With
        ``tool_choice`` ``"required"`` or a named tool and no ``tool_handler``, an answer without
        a tool call gets one repair round (an explicit instruction to call the tool); if the model
        still answers in text, that answer is returned as is.

        With ``response_format`` (``{"type": "json_object"}`` or ``{"type": "json_schema",
        "json_schema": {"name", "schema"}}``) the answer is parsed and validated into
        ``result.parsed``; an invalid answer gets one repair round, then
        :class:`~cursorpipe.errors.StructuredOutputError`.
        """
        request = self._with_handler(self._request_from(locals()), None)
        return await self._collect(request, stop)

    async def generate(
        self,
        model: str | None,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float = 0,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        timeout_s: float | None = None,
    ) -> str:
        """Answer one prompt (optionally with a system prompt) and return the text.

        ``max_tokens`` caps the answer (Cursor has no such knob: cursorpipe counts on the stream
        and stops the run); ``None`` means no limit. An answer cut by the *default* 2048 logs a
        WARNING on the ``cursorpipe`` logger; use :meth:`complete` to see ``stop_reason``.
        ``temperature`` is accepted for compatibility and reaches no transport (Cursor has no
        sampling parameters)."""
        result = await self.complete(
            model,
            prompt=prompt,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
        )
        return result.text

    async def chat(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any] | ChatMessage],
        *,
        temperature: float = 0,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        timeout_s: float | None = None,
    ) -> str:
        """Answer an OpenAI-style conversation (system/user/assistant; text or image parts).

        ``max_tokens`` and ``temperature`` as in :meth:`generate` (``None`` = no limit)."""
        result = await self.complete(
            model, messages, temperature=temperature, max_tokens=max_tokens, timeout_s=timeout_s
        )
        return result.text

    async def stream(
        self,
        model: str | None,
        prompt: str,
        *,
        system: str | None = None,
        timeout_s: float | None = None,
        reasoning_effort: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """Stream the answer to one prompt as text chunks (a thin view over :meth:`events`)."""
        source = self.events(
            model, prompt=prompt, system=system, timeout_s=timeout_s, reasoning_effort=reasoning_effort
        )
        async with aclosing(source) as events:
            async for event in events:
                if isinstance(event, TextDelta) and not event.notice and event.text:
                    yield event.text

    # ------------------------------------------------------------------------------------------
    # sessions and models
    # ------------------------------------------------------------------------------------------
    async def create_session(self, model: str | None = None) -> CursorSession:
        """Open a conversation whose history Cursor keeps; release it with ``discard()``."""
        transport = await self.transport()
        name = model_name(self._config, model)
        tsession = await transport.open_session(name)
        session = CursorSession(
            transport,
            tsession,
            name,
            build=self.build_request,
            run=self.run_request,
            forget=self._forget,
        )
        self._sessions.add(session)
        return session

    @asynccontextmanager
    async def session(self, model: str | None = None) -> AsyncGenerator[CursorSession, None]:
        """``async with client.session(model) as s:`` — a session discarded on exit."""
        session = await self.create_session(model)
        try:
            yield session
        finally:
            await session.discard()

    def _forget(self, session: CursorSession) -> None:
        self._sessions.discard(session)

    async def list_models(self) -> list[ModelInfo]:
        """The models the account can use (id, display name, aliases where known)."""
        transport = await self.transport()
        return await transport.list_models()


async def collect_result(
    stream: AsyncGenerator[Event, None], request: TurnRequest, *, session_id: str | None = None
) -> CompletionResult:
    """Consume an event stream into a :class:`CompletionResult` (the shared fold, ``_fold.py``)."""
    return await collect(stream, request, session_id=session_id)
