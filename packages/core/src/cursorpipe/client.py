"""``CursorClient``: routing, retries, limits, lifecycle and request accounting.

All public request methods are views over one pipeline, :meth:`CursorClient.events`:

    transport.run()  ->  retry before first output  ->  deadline per step  ->  stop/max_tokens
                     ->  accounting (active_requests) and optional profiling  ->  caller
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from typing import Any

from ._constants import RETRY_AFTER_MAX_WAIT_S, RETRY_BACKOFF_BASE_S, RETRY_BACKOFF_MAX_S, RETRY_JITTER
from ._fold import collect
from ._limits import DEFAULT_MAX_TOKENS, OutputLimiter, is_default_max_tokens
from ._routing import create_transport
from ._structured import parse_response_format
from ._tool_choice import forced_tool
from ._tool_emulation import EmulatedToolParser, render_history, tool_instructions
from ._tool_runner import run_tool_handler
from .config import CursorPipeConfig
from .errors import (
    AgentTimeoutError,
    ConfigurationError,
    CursorPipeError,
    SessionError,
    StructuredOutputError,
    ToolLoopError,
)
from .session import CursorSession
from .transports.base import Transport, TransportSession
from .types import (
    ChatMessage,
    CompletionResult,
    Event,
    ModelInfo,
    TextDelta,
    TextPart,
    ThinkingDelta,
    TokenCountDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolHandler,
    ToolSpec,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
    normalize_messages,
)

__all__ = ["CursorClient", "collect_result"]

log = logging.getLogger("cursorpipe")
profile_log = logging.getLogger("cursorpipe.profile")

_CONTENT_EVENTS = (TextDelta, ThinkingDelta, ToolCallDelta, ToolCallEvent)
#: Rounds of the client-side tool loop (emulated tools + tool_handler) before ToolLoopError.
MAX_TOOL_ROUNDS = 8


class CursorClient:
    """Async client for the models of a Cursor subscription.

    ``CursorClient()`` reads :class:`CursorPipeConfig` from the environment and ``.env``. Use it as
    an async context manager, or call :meth:`close` when done. A client is bound to the event loop
    it first runs on (sync code goes through :class:`cursorpipe.SyncBridge`).

    Pass ``transport=`` to use a specific :class:`~cursorpipe.transports.base.Transport` instance
    (for example ``MockTransport`` in tests) instead of the one ``config.strategy`` selects.
    """

    def __init__(self, config: CursorPipeConfig | None = None, *, transport: Transport | None = None) -> None:
        self._config = config if config is not None else CursorPipeConfig()
        self._transport: Transport | None = transport
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
                self._transport = create_transport(self._config)
                log.info("cursorpipe: using the %s transport", self._transport.name)
            self._check_loop(self._transport)
            return self._transport

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
        so the first real request pays no cold start."""
        transport = await self.transport()
        await transport.start(pool_size=max(0, pool_size))

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
    def _model(self, model: str | None) -> str:
        name = (model or "").strip() or self._config.default_model
        return name

    def build_request(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any] | ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = 0,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
    ) -> TurnRequest:
        """Validate arguments and build the transport-neutral request.

        ``reasoning_effort`` (OpenAI's names: ``minimal``, ``low``, ``medium``, ``high``,
        ``xhigh``) is mapped to the model's effort parameter by the transport."""
        msgs: list[ChatMessage] = []
        if system:
            msgs.append(ChatMessage.of("system", system))
        fmt = parse_response_format(response_format)
        if fmt is not None:
            msgs.append(ChatMessage.of("system", fmt.instructions()))
        if messages is not None:
            msgs.extend(normalize_messages(messages))
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ConfigurationError("prompt must be a string", code="invalid_request")
            msgs.append(ChatMessage.of("user", prompt))
        if not any(m.role != "system" for m in msgs):
            raise ConfigurationError("a request needs at least one user message", code="invalid_request")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigurationError("max_tokens must be at least 1", code="invalid_request")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigurationError("timeout_s must be positive", code="invalid_request")
        effort = _effort(reasoning_effort)
        return TurnRequest(
            model=self._model(model),
            messages=tuple(msgs),
            mode=self._config.default_mode,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s if timeout_s is not None else self._config.request_timeout_s,
            tools=tuple(_tool_spec(t) for t in tools or ()),
            tool_choice=tool_choice,
            tool_handler=tool_handler,
            tool_result_timeout_s=self._config.tool_result_timeout_s,
            reasoning_effort=effort,
        )

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
    ) -> AsyncGenerator[Event, None]:
        """Stream the typed, transport-neutral events of one stateless turn.

        ``response_format`` (OpenAI shape) only asks for JSON here; :meth:`complete` also
        validates and repairs.

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
        request = self.build_request(
            model,
            messages,
            prompt=prompt,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            tool_handler=tool_handler,
            reasoning_effort=reasoning_effort,
        )
        async with aclosing(self.run_request(request, stop=stop)) as stream:
            async for event in stream:
                yield event

    async def run_request(
        self,
        request: TurnRequest,
        *,
        session: TransportSession | None = None,
        stop: Sequence[str] | None = None,
        tool_handler: ToolHandler | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Run a prepared :class:`TurnRequest` through the whole pipeline (used by sessions and
        integrations; most callers want :meth:`events`). ``tool_handler`` overrides
        ``request.tool_handler`` (see :meth:`events`)."""
        transport = await self.transport()
        if tool_handler is not None:
            request = replace(request, tool_handler=tool_handler)
        if request.tool_handler is not None and request.tool_result_timeout_s is None:
            request = replace(request, tool_result_timeout_s=self._config.tool_result_timeout_s)
        self._active += 1
        try:
            emulate = not transport.capabilities.native_tools and _needs_tool_emulation(request)
            source: AsyncGenerator[Event, None]
            if emulate and request.tool_handler is not None:
                source = self._tool_loop(transport, request, session, stop)
            else:
                if emulate:
                    request = _emulated_request(request)
                source = self._limited(transport, request, session, stop, emulate)
            async with aclosing(source) as stream:
                if self._config.enable_profiling:
                    stream = self._profiled(stream, request)
                async for event in stream:
                    yield event
        finally:
            self._active -= 1

    async def _tool_loop(
        self,
        transport: Transport,
        request: TurnRequest,
        session: TransportSession | None,
        stop: Sequence[str] | None,
    ) -> AsyncGenerator[Event, None]:
        """``tool_handler`` on a transport without native tools: run → parse the emulated calls →
        call the handler → a new request with the calls and results → ... until the model answers
        without calls (at most :data:`MAX_TOOL_ROUNDS` rounds of calls, then ``ToolLoopError``).

        Stateless: each round resends the whole conversation plus the exchange so far. In a
        session the transport keeps the history, so a round sends only the tool results. The
        consumer sees one ``TransportInfo``, every round's text and (``handled``) tool calls, and
        one ``UsageEvent``/``TurnEnd`` with the summed usage at the end."""
        handler = request.tool_handler
        assert handler is not None
        timeout_s = request.tool_result_timeout_s or self._config.tool_result_timeout_s
        messages = list(request.messages)
        total: Usage | None = None
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            emulated = _emulated_request(request.with_messages(messages))
            calls: list[ToolCallEvent] = []
            text: list[str] = []
            end: TurnEnd | None = None
            usage: Usage | None = None
            async with aclosing(self._limited(transport, emulated, session, stop, True)) as stream:
                async for event in stream:
                    if isinstance(event, TransportInfo) and round_no > 0:
                        continue
                    if isinstance(event, UsageEvent):
                        usage = event.usage
                        continue
                    if isinstance(event, TurnEnd):
                        end = event
                        break
                    if isinstance(event, ToolCallEvent) and event.error is None:
                        calls.append(event)
                        event = replace(event, handled=True)
                    elif isinstance(event, TextDelta) and not event.notice:
                        text.append(event.text)
                    yield event
            assert end is not None  # _limited always ends with TurnEnd or raises
            this = end.usage or usage
            if this is not None:
                total = this if total is None else total + this
            if end.stop_reason != "tool_calls" or not calls:
                if total is not None:
                    yield UsageEvent(total)
                yield TurnEnd(end.stop_reason, total)
                return
            if round_no == MAX_TOOL_ROUNDS:
                break
            results = await asyncio.gather(*(_call_handler(handler, c.call, timeout_s) for c in calls))
            assistant = ChatMessage(
                role="assistant",
                content=(TextPart("".join(text)),) if "".join(text) else (),
                tool_calls=tuple(c.call for c in calls),
            )
            tool_msgs = [
                ChatMessage(role="tool", content=(TextPart(r),), tool_call_id=c.call.id, name=c.call.name)
                for c, r in zip(calls, results, strict=True)
            ]
            # In a session the transport already holds the model's calls: send only the results.
            messages = tool_msgs if session is not None else [*messages, assistant, *tool_msgs]
        raise ToolLoopError(
            f"The model was still calling tools after {MAX_TOOL_ROUNDS} rounds; stopped. "
            "Check the tool results it gets, or drive the loop yourself without tool_handler.",
            transport=transport.name,
        )

    async def _limited(
        self,
        transport: Transport,
        request: TurnRequest,
        session: TransportSession | None,
        stop: Sequence[str] | None,
        emulate_tools: bool = False,
    ) -> AsyncGenerator[Event, None]:
        limiter = OutputLimiter(stop, request.max_tokens)
        source = self._with_retries(transport, request, session)
        if emulate_tools:
            source = _parse_emulated_tools(source, request)
        if not limiter.active:
            async with aclosing(source) as stream:
                async for event in stream:
                    if not isinstance(event, TokenCountDelta):
                        yield event
            return
        usage: Usage | None = None
        async with aclosing(source) as stream:
            async for event in stream:
                if isinstance(event, TokenCountDelta):
                    limiter.count(event.tokens)
                    continue
                if isinstance(event, TextDelta) and not event.notice:
                    text, done = limiter.feed(event.text)
                    if text:
                        yield TextDelta(text)
                    if done:
                        break
                    continue
                if isinstance(event, UsageEvent):
                    usage = event.usage
                    continue
                if isinstance(event, TurnEnd):
                    rest = limiter.flush()
                    if rest:
                        yield TextDelta(rest)
                    usage = event.usage or usage
                    if usage is not None:
                        yield UsageEvent(usage)
                    yield event
                    return
                yield event
        # A limit was hit: the upstream run was closed (and cancelled) by leaving the loop above.
        if limiter.reason == "length" and is_default_max_tokens(request.max_tokens):
            log.warning(
                "cursorpipe: the answer of %r was cut at the default max_tokens=%d; pass "
                "max_tokens=None for no limit or a larger max_tokens",
                request.model,
                request.max_tokens,
            )
        inputs = "".join(m.text for m in request.messages)
        cut = Usage(
            input_tokens=estimate_tokens(inputs),
            output_tokens=limiter.output_tokens(),
            estimated=True,
        )
        yield UsageEvent(cut)
        yield TurnEnd("length" if limiter.reason == "length" else "stop", cut)

    async def _with_retries(
        self, transport: Transport, request: TurnRequest, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        attempt = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (request.timeout_s or self._config.request_timeout_s)
        # live-dialect.md row 17: every retry of this turn keeps its run id (and with it
        # x-original-request-id); only x-request-id changes, which `attempt` tells the transport.
        run_id = request.run_id or str(uuid.uuid4())
        while True:
            produced = False
            request = replace(request, run_id=run_id, attempt=attempt)
            try:
                async with aclosing(transport.run(request, session=session)) as stream:
                    while True:
                        try:
                            async with asyncio.timeout_at(deadline):
                                event = await anext(stream)
                        except StopAsyncIteration:
                            break
                        except CursorPipeError:
                            # A transport's own timeout errors (StreamStalledError is a
                            # TimeoutError too) are not this deadline: keep them as they are.
                            raise
                        except TimeoutError as exc:
                            raise AgentTimeoutError(
                                f"No complete answer from {request.model!r} within "
                                f"{request.timeout_s:g} s. Raise timeout_s (or CURSORPIPE_REQUEST_TIMEOUT_S) "
                                "or ask for a shorter answer.",
                                transport=transport.name,
                            ) from exc
                        if isinstance(event, _CONTENT_EVENTS):
                            produced = True
                        yield event
                return
            except CursorPipeError as exc:
                if exc.transport is None:
                    exc.transport = transport.name
                wait = self._retry_delay(exc, attempt, produced, deadline - loop.time())
                if wait is None:
                    raise
                attempt += 1
                log.warning(
                    "cursorpipe: %s on %s (attempt %d), retrying in %.2f s",
                    exc.code,
                    transport.name,
                    attempt,
                    wait,
                )
                await asyncio.sleep(wait)

    def _retry_delay(
        self, exc: CursorPipeError, attempt: int, produced: bool, remaining: float
    ) -> float | None:
        if produced or not exc.retryable or attempt >= self._config.max_retries:
            return None
        if exc.retry_after is not None:
            wait = exc.retry_after
            if wait > RETRY_AFTER_MAX_WAIT_S:
                return None
        else:
            base = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * (2**attempt))
            wait = base * (1 + random.uniform(0, RETRY_JITTER))  # noqa: S311 - jitter, not crypto
        if wait >= remaining:
            return None
        return wait

    async def _profiled(
        self, stream: AsyncGenerator[Event, None], request: TurnRequest
    ) -> AsyncGenerator[Event, None]:
        start = time.perf_counter()
        last = start
        first: float | None = None
        gaps: list[float] = []
        chunks = 0
        try:
            async for event in stream:
                now = time.perf_counter()
                if isinstance(event, (TextDelta, ThinkingDelta)):
                    chunks += 1
                    if first is None:
                        first = now - start
                        profile_log.info("ttfc model=%s %.1f ms", request.model, first * 1000)
                    else:
                        gaps.append(now - last)
                    last = now
                yield event
        finally:
            total = time.perf_counter() - start
            profile_log.info(
                "turn model=%s total=%.1f ms ttfc=%s chunks=%d max_gap=%.1f ms mean_gap=%.1f ms",
                request.model,
                total * 1000,
                f"{first * 1000:.1f} ms" if first is not None else "n/a",
                chunks,
                max(gaps, default=0.0) * 1000,
                (sum(gaps) / len(gaps) * 1000) if gaps else 0.0,
            )

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
        request = self.build_request(
            model,
            messages,
            prompt=prompt,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            tool_handler=tool_handler,
            reasoning_effort=reasoning_effort,
        )
        result = await collect_result(self.run_request(request, stop=stop), request)
        result = await self._tool_choice_repair(request, result, stop)
        fmt = parse_response_format(response_format)
        if fmt is None or result.stop_reason == "tool_calls":
            return result
        try:
            return replace(result, parsed=fmt.validate(result.text))
        except StructuredOutputError as exc:
            log.info("cursorpipe: structured output invalid (%s); one repair round", exc.message)
            repair = request.with_messages(
                [
                    *request.messages,
                    ChatMessage.of("assistant", result.text),
                    ChatMessage.of(
                        "user",
                        f"Your answer was not valid: {exc.message}. "
                        "Reply again with only the corrected JSON.",
                    ),
                ]
            )
            second = await collect_result(self.run_request(repair, stop=stop), repair)
            parsed = fmt.validate(second.text)
            return replace(second, parsed=parsed, usage=result.usage + second.usage)

    async def _tool_choice_repair(
        self, request: TurnRequest, result: CompletionResult, stop: Sequence[str] | None
    ) -> CompletionResult:
        """``tool_choice`` required/named is honoured by prompting (no protocol field exists,
        see ``transports/connect/_turn.py`` ``tool_choice_instruction``): one repair round when the
        model answered without the call, then whatever it says."""
        required = request.tool_choice in ("required", "any") or forced_tool(request.tool_choice)
        if not required or not request.tools or request.tool_handler is not None or result.tool_calls:
            return result
        forced = forced_tool(request.tool_choice)
        ask = (
            f"You did not call a tool. Call the tool {forced!r} now."
            if forced
            else "You did not call a tool. Call at least one of the provided tools now."
        )
        log.info("cursorpipe: tool_choice=%r not honoured; one repair round", request.tool_choice)
        repair = request.with_messages(
            [*request.messages, ChatMessage.of("assistant", result.text), ChatMessage.of("user", ask)]
        )
        second = await collect_result(self.run_request(repair, stop=stop), repair)
        return replace(second, usage=result.usage + second.usage)

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
        name = self._model(model)
        tsession = await transport.open_session(name)
        session = CursorSession(self, transport, tsession, name)
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


#: OpenAI's ``reasoning_effort`` values (plus ``none``/``xhigh`` that newer models take).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def _effort(value: str | None) -> str | None:
    """Normalise ``reasoning_effort``; a value outside OpenAI's names is a typed error."""
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in REASONING_EFFORTS:
        raise ConfigurationError(
            f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)} (got {value!r}).",
            code="invalid_request",
        )
    return value.strip().lower()


def _needs_tool_emulation(request: TurnRequest) -> bool:
    offered = bool(request.tools) and request.tool_choice != "none"
    return offered or any(m.role == "tool" or m.tool_calls for m in request.messages)


def _emulated_request(request: TurnRequest) -> TurnRequest:
    """Offer the tools in the system prompt and render earlier tool traffic as text."""
    messages = render_history(request.messages)
    block = tool_instructions(request.tools, request.tool_choice)
    if block:
        messages = [ChatMessage.of("system", block), *messages]
    return request.with_messages(messages)


async def _parse_emulated_tools(
    source: AsyncGenerator[Event, None], request: TurnRequest
) -> AsyncGenerator[Event, None]:
    parser = EmulatedToolParser(request.tools if request.tool_choice != "none" else ())
    async with aclosing(source) as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and not event.notice:
                text = parser.feed(event.text)
                if text:
                    yield TextDelta(text)
                continue
            if isinstance(event, TurnEnd):
                rest, calls = parser.finish()
                if rest:
                    yield TextDelta(rest)
                for call in calls:
                    yield ToolCallDelta(
                        index=call.index,
                        id=call.call.id,
                        name=call.call.name,
                        arguments_delta=call.call.arguments,
                    )
                    yield call
                if any(c.error is None for c in calls):
                    event = TurnEnd("tool_calls", event.usage)
            yield event


async def _call_handler(handler: ToolHandler, call: ToolCall, timeout_s: float) -> str:
    """One tool result for the client-side loop (a raised handler reads as ``Error: ...``)."""
    answer = await run_tool_handler(handler, call, timeout_s)
    return "Error: " + answer.text if answer.is_error else answer.text


def _tool_spec(tool: ToolSpec | Mapping[str, Any]) -> ToolSpec:
    if isinstance(tool, ToolSpec):
        return tool
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ConfigurationError("each tool needs a function name", code="invalid_request")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return ToolSpec(name=fn["name"], description=str(fn.get("description") or ""), parameters=params)


async def collect_result(
    stream: AsyncGenerator[Event, None], request: TurnRequest, *, session_id: str | None = None
) -> CompletionResult:
    """Consume an event stream into a :class:`CompletionResult` (the shared fold, ``_fold.py``)."""
    return await collect(stream, request, session_id=session_id)
