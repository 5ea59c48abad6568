"""Emulated tools as a wrapper transport, for transports without a client tool channel (acp,
subprocess): the tools are offered in the prompt, the model's tagged calls are parsed out of the
text (the prompt format and parser are in :mod:`cursorpipe._tool_emulation`), and with a
``tool_handler`` the wrapper runs the client-side loop (call, answer, next round) itself.

:func:`tool_stage` puts the wrapper in front of a transport only when the transport lacks native
tools, so the client never asks which kind it has, and a request without tools goes straight to the
transport (issue 16: no per-event cost on the plain path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from .._constants import TOOL_RESULT_TIMEOUT_S
from .._tool_emulation import EmulatedToolParser, render_history, tool_instructions
from .._tool_runner import run_tool_handler
from ..errors import ToolLoopError
from ..transports.base import Transport, TransportCapabilities, TransportSession
from ..types import (
    ChatMessage,
    Event,
    ModelInfo,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolHandler,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
)
from .retries import Runner

__all__ = ["MAX_TOOL_ROUNDS", "EmulatedToolsTransport", "needs_tool_emulation", "tool_stage"]

#: Rounds of the client-side tool loop (emulated tools + tool_handler) before ToolLoopError.
MAX_TOOL_ROUNDS = 8


def tool_stage(transport: Transport, run: Runner, *, tool_result_timeout_s: float) -> Runner:
    """``run`` itself on a transport with native tools, else ``run`` behind the emulation wrapper."""
    if transport.capabilities.native_tools:
        return run
    return EmulatedToolsTransport(transport, run=run, tool_result_timeout_s=tool_result_timeout_s).run


def needs_tool_emulation(request: TurnRequest) -> bool:
    """Whether the request offers tools or carries earlier tool traffic."""
    offered = bool(request.tools) and request.tool_choice != "none"
    return offered or any(m.role == "tool" or m.tool_calls for m in request.messages)


class EmulatedToolsTransport:
    """A :class:`~cursorpipe.transports.base.Transport` that gives ``inner`` caller-defined tools
    by prompting. Each model round runs on ``run`` (default ``inner.run``; the client passes its
    retry stage, so every round is retried and timed on its own)."""

    def __init__(
        self,
        inner: Transport,
        *,
        run: Runner | None = None,
        tool_result_timeout_s: float = TOOL_RESULT_TIMEOUT_S,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._run: Runner = run if run is not None else inner.run
        self._tool_result_timeout_s = tool_result_timeout_s

    @property
    def capabilities(self) -> TransportCapabilities:
        return self.inner.capabilities

    async def start(self, *, pool_size: int = 0) -> None:
        await self.inner.start(pool_size=pool_size)

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """The turn with tools emulated (the inner stream as it is when the request has none)."""
        if not needs_tool_emulation(request):
            return self._run(request, session=session)
        if request.tool_handler is not None:
            return self._tool_loop(request, request.tool_handler, session)
        emulated = emulated_request(request)
        return parse_emulated_tools(self._run(emulated, session=session), emulated)

    async def open_session(self, model: str) -> TransportSession:
        return await self.inner.open_session(model)

    async def close_session(self, session: TransportSession) -> None:
        await self.inner.close_session(session)

    async def list_models(self) -> list[ModelInfo]:
        return await self.inner.list_models()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _tool_loop(
        self, request: TurnRequest, handler: ToolHandler, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        """run → parse the emulated calls → call the handler → a new request with the calls and
        results → ... until the model answers without calls (at most :data:`MAX_TOOL_ROUNDS` rounds
        of calls, then ``ToolLoopError``).

        Stateless: each round resends the whole conversation plus the exchange so far. In a
        session the transport keeps the history, so a round sends only the tool results. The
        consumer sees one ``TransportInfo``, every round's text and (``handled``) tool calls, and
        one ``UsageEvent``/``TurnEnd`` with the summed usage at the end."""
        timeout_s = request.tool_result_timeout_s or self._tool_result_timeout_s
        messages = list(request.messages)
        total: Usage | None = None
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            emulated = emulated_request(request.with_messages(messages))
            state = _Round()
            stream = parse_emulated_tools(self._run(emulated, session=session), emulated)
            async with aclosing(stream) as events:
                async for event in events:
                    out = state.take(event, first=round_no == 0)
                    if out is not None:
                        yield out
                    if state.end is not None:
                        break
            end = state.end
            if end is None:  # pragma: no cover - the retry stage always ends with TurnEnd or raises
                raise AssertionError("a round ended without TurnEnd")
            this = end.usage or state.usage
            if this is not None:
                total = this if total is None else total + this
            if end.stop_reason != "tool_calls" or not state.calls:
                if total is not None:
                    yield UsageEvent(total)
                yield TurnEnd(end.stop_reason, total)
                return
            if round_no == MAX_TOOL_ROUNDS:
                break
            results = await asyncio.gather(*(_call_handler(handler, c.call, timeout_s) for c in state.calls))
            # In a session the transport already holds the model's calls: send only the results.
            messages = (
                state.follow_up(results) if session is not None else [*messages, *state.exchange(results)]
            )
        raise ToolLoopError(
            f"The model was still calling tools after {MAX_TOOL_ROUNDS} rounds; stopped. "
            "Check the tool results it gets, or drive the loop yourself without tool_handler.",
            transport=self.name,
        )


@dataclass(slots=True)
class _Round:
    """What one round of the tool loop produced."""

    calls: list[ToolCallEvent] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage: Usage | None = None
    end: TurnEnd | None = None

    def take(self, event: Event, *, first: bool) -> Event | None:
        """Record ``event``; return what the consumer sees of it (``None``: nothing)."""
        if isinstance(event, TransportInfo):
            return event if first else None
        if isinstance(event, UsageEvent):
            self.usage = event.usage
            return None
        if isinstance(event, TurnEnd):
            self.end = event
            return None
        if isinstance(event, ToolCallEvent) and event.error is None:
            self.calls.append(event)
            return replace(event, handled=True)
        if isinstance(event, TextDelta) and not event.notice:
            self.text.append(event.text)
        return event

    def follow_up(self, results: list[str]) -> list[ChatMessage]:
        """The ``tool`` messages answering this round's calls."""
        return [
            ChatMessage(role="tool", content=(TextPart(r),), tool_call_id=c.call.id, name=c.call.name)
            for c, r in zip(self.calls, results, strict=True)
        ]

    def exchange(self, results: list[str]) -> list[ChatMessage]:
        """The assistant message with this round's calls, then their results."""
        text = "".join(self.text)
        assistant = ChatMessage(
            role="assistant",
            content=(TextPart(text),) if text else (),
            tool_calls=tuple(c.call for c in self.calls),
        )
        return [assistant, *self.follow_up(results)]


def emulated_request(request: TurnRequest) -> TurnRequest:
    """Offer the tools in the system prompt and render earlier tool traffic as text."""
    messages = render_history(request.messages)
    block = tool_instructions(request.tools, request.tool_choice)
    if block:
        messages = [ChatMessage.of("system", block), *messages]
    return request.with_messages(messages)


async def parse_emulated_tools(
    source: AsyncGenerator[Event, None], request: TurnRequest
) -> AsyncGenerator[Event, None]:
    """Turn the tagged call block in the answer text into tool-call events."""
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
