"""Build the transport a configuration asks for. Implementations are imported lazily so that an
optional dependency of one transport never breaks the others.

It lives inside ``transports`` so the ``auto`` strategy can build its candidates without the
transports importing upward (the import rules in pyproject.toml forbid the cycle);
``cursorpipe._routing`` re-exports it for the client."""

from __future__ import annotations

import importlib
from typing import cast

from ..config import CursorPipeConfig, Strategy
from ..errors import ConfigurationError
from .base import Transport

__all__ = ["create_transport"]

_IMPLEMENTATIONS: dict[Strategy, tuple[str, str]] = {
    Strategy.CONNECT: ("cursorpipe.transports.connect", "ConnectTransport"),
    Strategy.ACP: ("cursorpipe.transports.acp", "AcpTransport"),
    Strategy.SUBPROCESS: ("cursorpipe.transports.subprocess", "SubprocessTransport"),
    Strategy.AUTO: ("cursorpipe.transports.auto", "AutoTransport"),
}


def create_transport(config: CursorPipeConfig, strategy: Strategy | None = None) -> Transport:
    """A new, unstarted transport for ``strategy`` (default: ``config.strategy``)."""
    strategy = strategy or config.strategy
    module_name, class_name = _IMPLEMENTATIONS[strategy]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigurationError(
            f"The {strategy.value!r} transport is not available in this installation of cursorpipe.",
            code="transport_unavailable",
        ) from exc
    return cast(Transport, getattr(module, class_name)(config))
