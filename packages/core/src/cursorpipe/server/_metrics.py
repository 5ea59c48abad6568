"""Optional Prometheus metrics (``/metrics``), from the ``metrics`` extra (prometheus-client).
Without it the server works the same and ``/metrics`` answers 501 naming the install command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Metrics"]


class Metrics:
    """Request, latency, token and saturation metrics in a private registry (one per app)."""

    def __init__(self, gauges: dict[str, Callable[[], float]]) -> None:
        try:
            import prometheus_client as prom
        except ModuleNotFoundError:
            self.enabled = False
            return
        self.enabled = True
        self._prom: Any = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "cursorpipe_http_requests",
            "HTTP requests answered",
            ["path", "method", "status"],
            registry=self.registry,
        )
        self.duration = prom.Histogram(
            "cursorpipe_http_request_duration_seconds",
            "Time to the end of the response",
            ["path"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.ttft = prom.Histogram(
            "cursorpipe_time_to_first_token_seconds",
            "Time from request to first model output",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.tokens = prom.Counter(
            "cursorpipe_tokens", "Tokens reported by Cursor (or estimated)", ["kind"], registry=self.registry
        )
        self.upstream_errors = prom.Counter(
            "cursorpipe_upstream_errors", "Failed Cursor runs by error code", ["code"], registry=self.registry
        )
        # prometheus-client resolves label values to a child on every call (a lock and a dict
        # lookup with validation): the few children in use are kept here (issue 16, hot path).
        self._children: dict[tuple[Any, ...], Any] = {}
        for name, fn in gauges.items():
            gauge = prom.Gauge(f"cursorpipe_{name}", name.replace("_", " "), registry=self.registry)
            gauge.set_function(fn)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        if self.enabled:
            self._child(self.requests, path, method, str(status)).inc()
            self._child(self.duration, path).observe(seconds)

    def observe_ttft(self, endpoint: str, seconds: float) -> None:
        """Record a time to first token."""
        if self.enabled:
            self._child(self.ttft, endpoint).observe(seconds)

    def observe_tokens(self, prompt: int, completion: int, reasoning: int) -> None:
        """Add token counts."""
        if self.enabled:
            self._child(self.tokens, "prompt").inc(prompt)
            self._child(self.tokens, "completion").inc(completion)
            self._child(self.tokens, "reasoning").inc(reasoning)

    def observe_error(self, code: str | None) -> None:
        """Count a failed run."""
        if self.enabled:
            self._child(self.upstream_errors, code or "unknown").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
