"""The interface between the shared turn loop (``_turn.py``) and a wire format.

A wire format (OpenAI chat completions, OpenAI Responses, Anthropic Messages...) is a
:class:`WireFormat`: it parses a request body into a :class:`Renderer` for that one request, and
says how its errors look. The loop does everything else once for every format: the concurrency
gate, reading the body under its limits, sessions, building the turn request, running ``n``
parallel runs, waiting for the first output so early failures become HTTP statuses, keep-alive
timing, disconnects, the drain farewell, folding each run into a :class:`TurnAccumulator`, usage,
metrics and health.

A renderer only turns what happened into bytes (SSE frames) or a JSON body. Every method that
returns ``bytes`` may return ``b""`` (nothing to send); frames are built with
``_sse.frame(data, event)`` and JSON with ``_json.dumps``. Events reach the renderer after they
were fed to the run's accumulator, so the renderer reads the run's state (text so far, valid and
invalid tool calls, stop reason, parsed value) from the accumulator instead of folding again.

Order of calls on a stream: ``open`` once, then ``event`` for each event of each run (runs
interleave; ``index`` says which), ``run_end`` once per run after its last event, and ``close``
after every run ended; or ``fail`` once (a run failed mid-way; nothing follows it). ``keepalive``
whenever no event came for the keep-alive interval. Non-streaming requests call ``body`` once
with every run folded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._fold import TurnAccumulator
from ..types import Event, Usage
from ._errors import APIError, ErrorShape, openai_error_body
from ._requests import TurnSpec

__all__ = ["Renderer", "TurnSpec", "WireFormat"]


class Renderer(Protocol):
    """Renders one request's runs in one wire format (created by :meth:`WireFormat.parse`)."""

    @property
    def spec(self) -> TurnSpec:
        """What to run."""
        ...

    @property
    def keepalive(self) -> bytes:
        """An SSE frame that keeps an idle stream open (a comment for OpenAI, ``event: ping``
        for Anthropic)."""
        ...

    def open(self, model: str) -> bytes:
        """The frames that start the stream, sent once the first output (or the keep-alive
        interval) came; ``model`` is the model the turn is served by, as far as known."""
        ...

    def event(self, index: int, event: Event, run: TurnAccumulator) -> bytes:
        """The frames for one event of run ``index`` (already fed to ``run``)."""
        ...

    def run_end(self, index: int, run: TurnAccumulator) -> bytes:
        """Run ``index`` has ended (after its ``TurnEnd``)."""
        ...

    def close(self, runs: Sequence[TurnAccumulator], usage: Usage) -> bytes:
        """The frames that end a stream that succeeded; ``usage`` totals every run."""
        ...

    def fail(self, err: APIError) -> bytes:
        """The frames that end a stream with an error: a run failed mid-way, or the server is
        shutting down with the stream still open."""
        ...

    def body(
        self, runs: Sequence[TurnAccumulator], usage: Usage, model: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The non-streaming answer: its JSON body and any response headers of its own."""
        ...


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One route's wire format (a module-level instance per route).

    ``endpoint`` labels its time-to-first-token metric (``chat.completions``, ``responses``...);
    ``sessions`` says whether ``X-Cursor-Session-ID`` turns are served on the route;
    ``renderer(body, strict)`` validates a request body (raising a 400 :class:`APIError` naming
    the field) and returns the renderer of that request; ``errors`` gives the format's JSON body
    for an error answered before the stream started (OpenAI's by default).
    """

    endpoint: str
    sessions: bool
    renderer: Callable[[dict[str, Any], bool], Renderer]
    errors: ErrorShape = openai_error_body

    def parse(self, body: dict[str, Any], *, strict: bool) -> Renderer:
        """Validate ``body`` and return its renderer."""
        return self.renderer(body, strict)

    def error_body(self, err: APIError) -> dict[str, Any]:
        """The error JSON of this format."""
        return self.errors(err)
