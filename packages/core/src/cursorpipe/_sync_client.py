"""``SyncCursorClient``: :class:`~cursorpipe.CursorClient` for synchronous code.

Every method is the async client's own method run on :class:`~cursorpipe.SyncBridge` (design.md
lesson 4: one sync bridge, no sync twins). The forwarding is generated from the async methods'
signatures, so the two clients cannot drift apart: same parameters, same defaults, same errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._bridge import SyncBridge
from .client import CursorClient
from .session import CursorSession

if TYPE_CHECKING:
    from .config import CursorPipeConfig
    from .transports.base import Transport

__all__ = ["SyncCursorClient", "SyncCursorSession"]

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


class _Bridged(Generic[A]):
    """Base of the sync wrappers: the async object and the bridge whose loop it lives on."""

    _async: A
    _bridge: SyncBridge


def _signature_without_self(fn: Callable[..., Any], keep_return: bool) -> inspect.Signature:
    """What ``help()`` and IDEs show for a forwarded method: the async method's parameters minus
    ``self`` (``functools.wraps`` alone would show ``self`` too)."""
    sig = inspect.signature(fn)
    return sig.replace(
        parameters=list(sig.parameters.values())[1:],
        return_annotation=sig.return_annotation if keep_return else inspect.Signature.empty,
    )


class _Run(Generic[A, P, T]):
    """A sync method that runs the async method ``fn`` of the wrapped object on the bridge."""

    def __init__(self, fn: Callable[Concatenate[A, P], Awaitable[T]]) -> None:
        self._fn = fn
        self._sig = _signature_without_self(fn, keep_return=True)
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Run[A, P, T]: ...
    @overload
    def __get__(self, obj: _Bridged[A], owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: _Bridged[A] | None, owner: type[Any]) -> _Run[A, P, T] | Callable[P, T]:
        if obj is None:
            return self
        fn, target, bridge = self._fn, obj._async, obj._bridge

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return bridge.run(lambda: fn(target, *args, **kwargs))

        call.__signature__ = self._sig  # type: ignore[attr-defined]
        return call


class _Iterate(Generic[A, P, T]):
    """A sync method that iterates the async generator method ``fn`` on the bridge; breaking off
    early closes (and so cancels) the async stream."""

    def __init__(self, fn: Callable[Concatenate[A, P], AsyncIterable[T]]) -> None:
        self._fn = fn
        self._sig = _signature_without_self(fn, keep_return=False)
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Iterate[A, P, T]: ...
    @overload
    def __get__(self, obj: _Bridged[A], owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    def __get__(
        self, obj: _Bridged[A] | None, owner: type[Any]
    ) -> _Iterate[A, P, T] | Callable[P, Iterator[T]]:
        if obj is None:
            return self
        fn, target, bridge = self._fn, obj._async, obj._bridge

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            return bridge.iterate(lambda: fn(target, *args, **kwargs))

        call.__signature__ = self._sig  # type: ignore[attr-defined]
        return call


class SyncCursorSession(_Bridged[CursorSession]):
    """A :class:`~cursorpipe.CursorSession` for synchronous code (from
    :meth:`SyncCursorClient.session` or :meth:`SyncCursorClient.create_session`)."""

    def __init__(self, session: CursorSession, bridge: SyncBridge) -> None:
        self._async, self._bridge = session, bridge

    prompt = _Run(CursorSession.prompt)
    events = _Iterate(CursorSession.events)
    stream_prompt = _Iterate(CursorSession.stream_prompt)
    discard = _Run(CursorSession.discard)

    @property
    def async_session(self) -> CursorSession:
        """The wrapped async session (use it only on the bridge's loop)."""
        return self._async

    @property
    def model(self) -> str:
        """The session's model."""
        return self._async.model

    @property
    def session_id(self) -> str:
        """Cursor's id of this conversation."""
        return self._async.session_id

    @property
    def turn_count(self) -> int:
        """Completed turns."""
        return self._async.turn_count

    @property
    def discarded(self) -> bool:
        """Whether :meth:`discard` was called."""
        return self._async.discarded

    def __enter__(self) -> SyncCursorSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def __repr__(self) -> str:
        return f"Sync{self._async!r}"


class SyncCursorClient(_Bridged[CursorClient]):
    """:class:`~cursorpipe.CursorClient` for synchronous code, method for method::

        with cursorpipe.SyncCursorClient() as client:
            print(client.generate("auto", "Say hi"))
            for chunk in client.stream("auto", "Count to five"):
                print(chunk, end="")

    The async client runs on ``bridge`` (default: the process-wide :meth:`SyncBridge.default`),
    so it stays on one event loop however many threads call it. Ctrl-C during a call cancels the
    request; leaving a ``stream``/``events`` loop early cancels the upstream run.
    """

    def __init__(
        self,
        config: CursorPipeConfig | None = None,
        *,
        transport: Transport | None = None,
        bridge: SyncBridge | None = None,
    ) -> None:
        self._bridge = bridge if bridge is not None else SyncBridge.default()
        self._async = CursorClient(config, transport=transport)

    generate = _Run(CursorClient.generate)
    chat = _Run(CursorClient.chat)
    complete = _Run(CursorClient.complete)
    stream = _Iterate(CursorClient.stream)
    events = _Iterate(CursorClient.events)
    list_models = _Run(CursorClient.list_models)
    warmup = _Run(CursorClient.warmup)
    close = _Run(CursorClient.close)

    def create_session(self, model: str | None = None) -> SyncCursorSession:
        """Open a conversation whose history Cursor keeps; release it with ``discard()``."""
        return SyncCursorSession(self._bridge.run(lambda: self._async.create_session(model)), self._bridge)

    @contextmanager
    def session(self, model: str | None = None) -> Iterator[SyncCursorSession]:
        """``with client.session(model) as s:`` — a session discarded on exit."""
        session = self.create_session(model)
        try:
            yield session
        finally:
            session.discard()

    @property
    def async_client(self) -> CursorClient:
        """The wrapped async client (use it only on :attr:`bridge`'s loop)."""
        return self._async

    @property
    def bridge(self) -> SyncBridge:
        """The bridge whose loop runs the async client."""
        return self._bridge

    @property
    def config(self) -> CursorPipeConfig:
        """The configuration in use."""
        return self._async.config

    @property
    def active_requests(self) -> int:
        """Requests in flight through this client."""
        return self._async.active_requests

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._async.closed

    @property
    def transport_name(self) -> str | None:
        """Name of the transport in use, once one was created."""
        return self._async.transport_name

    def __enter__(self) -> SyncCursorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
