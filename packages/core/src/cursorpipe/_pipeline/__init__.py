"""The event pipeline: one turn from a :class:`~cursorpipe.types.TurnRequest` to the caller's
events, as a chain of stages that each take a callable or an event stream and never import the
client.

    transport.run -> retries + deadline (retries.py) -> emulated tools, on transports without
    native tools (emulated_tools.py) -> output limit (limit.py) -> validation (validate.py)
    -> profiling (profile.py) -> caller

A stage with nothing to do for a request is left out of its chain (issue 16: every generator an
event passes through costs CPU on every event). Requests are built by ``request.py``; the fold of
the events into a result is :mod:`cursorpipe._fold`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from functools import partial

from ..transports.base import Transport, TransportSession
from ..types import Event, TurnRequest
from .emulated_tools import tool_stage
from .limit import limit_output, limits_active
from .profile import profiled
from .retries import DeadlineWatch, RetryPolicy, Runner, run_with_retries
from .validate import needs_validation, validated

__all__ = ["Pipeline", "RetryPolicy"]


class Pipeline:
    """The stages for one transport, composed per request by :meth:`run`."""

    __slots__ = ("_profiling", "_source", "transport")

    def __init__(
        self,
        transport: Transport,
        policy: RetryPolicy,
        *,
        tool_result_timeout_s: float,
        profiling: bool = False,
    ) -> None:
        self.transport = transport
        retrying: Runner = partial(
            run_with_retries,
            transport.run,
            policy=policy,
            transport=transport.name,
            deadlines=DeadlineWatch(),
        )
        self._source = tool_stage(transport, retrying, tool_result_timeout_s=tool_result_timeout_s)
        self._profiling = profiling

    def run(
        self,
        request: TurnRequest,
        *,
        session: TransportSession | None = None,
        stop: Sequence[str] | None = None,
        validate: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """The events of one turn; ``validate`` adds the validation stage when the request has
        something to validate (a ``response_format`` or a forced tool choice)."""
        if validate and needs_validation(request):
            stream = validated(
                partial(self._round, session=session, stop=stop), request, in_session=session is not None
            )
        else:
            stream = self._round(request, session=session, stop=stop)
        return profiled(stream, request) if self._profiling else stream

    def _round(
        self, request: TurnRequest, *, session: TransportSession | None, stop: Sequence[str] | None
    ) -> AsyncGenerator[Event, None]:
        stream = self._source(request, session=session)
        return limit_output(stream, request, stop) if limits_active(request, stop) else stream
