"""One mapping of network failures to :class:`~cursorpipe.errors.NetworkError` (issue 13).

httpx transport errors, OS-level socket errors and connect timeouts become one public class at one
place, modelled on httpcore's ``map_exceptions``: the calling code wraps the I/O in
:func:`network_errors` with the message it wants and never catches those types by hand. Errors
already from cursorpipe's tree pass through unchanged (``StreamStalledError`` is a
``TimeoutError`` too, and must stay what it is).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .errors import CursorPipeError, NetworkError

__all__ = ["NETWORK_FAILURES", "network_errors"]

#: What counts as "could not talk to the other side": httpx's transport errors (connect, read,
#: write, timeouts, proxy, TLS) and the raw socket / ``asyncio.timeout`` failures of the h2 path.
NETWORK_FAILURES: tuple[type[BaseException], ...] = (httpx.TransportError, OSError, TimeoutError)


@contextmanager
def network_errors(
    message: str,
    *,
    error: type[NetworkError] = NetworkError,
    code: str = "unavailable",
    timeout_message: str | None = None,
    timeout_code: str = "deadline_exceeded",
    **fields: Any,
) -> Iterator[None]:
    """Raise ``error(message)`` from any network failure inside the block, cause chained.

    ``{exc}`` in a message is replaced by the failure's class name (never its text, which may
    carry a URL with credentials). ``timeout_message`` (with ``timeout_code``) is used instead
    for httpx timeouts when a deadline deserves its own words. ``fields`` go to the error
    (``transport``, ``retryable``...). ``CancelledError`` is a ``BaseException`` and passes.
    """
    try:
        yield
    except CursorPipeError:
        raise
    except NETWORK_FAILURES as exc:
        name = type(exc).__name__
        if timeout_message is not None and isinstance(exc, httpx.TimeoutException):
            raise error(timeout_message.format(exc=name), code=timeout_code, **fields) from exc
        raise error(message.format(exc=name), code=code, **fields) from exc
