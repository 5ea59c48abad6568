"""``SessionBinding``: what a framework model object needs to talk to one Cursor conversation.

Integrations (ChatCursor, CursorLLM) let a model be bound to a :class:`~cursorpipe.CursorSession`
so Cursor keeps the history. Callers may pass the whole conversation on every call or only the new
messages; the binding remembers the conversation as Cursor has seen it (one ``(role, text)`` key
per message, plus the replies) and sends only what comes after that prefix. A session lives on the
event loop of its first call (its sockets and pipes do), so the binding enforces that, and it can
be ended from any thread or loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ._bridge import SyncBridge
from .errors import ConfigurationError, SessionError
from .session import CursorSession

__all__ = ["SessionBinding"]

M = TypeVar("M")


class SessionBinding(Generic[M]):
    """One integration model's Cursor conversation.

    Args:
        key: ``(role, text)`` of a framework message, compared to detect what Cursor already holds.
        label: the integration's class name, for error messages.
        reply_role: the role ``key`` gives the model's own replies (``"ai"``, ``"assistant"``).
        session: an existing session to use (``owned=False``: never discarded by the binding).
    """

    def __init__(
        self,
        key: Callable[[M], tuple[str, str]],
        *,
        label: str,
        reply_role: str,
        session: CursorSession | None = None,
        owned: bool = True,
    ) -> None:
        self.key = key
        self.label = label
        self.reply_role = reply_role
        self.session = session
        self.owned = owned
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock: asyncio.Lock | None = None
        self.history: list[tuple[str, str]] = []

    def new_messages(self, messages: Sequence[M]) -> list[M]:
        """The messages Cursor has not seen (all of them when they do not extend its history)."""
        keys = [self.key(m) for m in messages]
        held = len(self.history)
        if held and keys[:held] == self.history:
            if len(keys) == held:
                raise ConfigurationError(
                    f"a session-bound {self.label} got no new message: Cursor already holds this "
                    "conversation; append the next user message",
                    code="invalid_request",
                )
            return list(messages[held:])
        return list(messages)

    def record(self, messages: Sequence[M], sent: Sequence[M], reply: str) -> None:
        """Remember the conversation after a turn that sent ``sent`` out of ``messages``."""
        keys = [self.key(m) for m in messages]
        if self.history and len(sent) < len(messages):
            self.history = [*keys, (self.reply_role, reply)]
        else:
            self.history = [*self.history, *keys, (self.reply_role, reply)]

    def check_loop(self) -> None:
        """Pin the binding to the running loop on first use; refuse any other loop afterwards."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif self.loop is not loop:
            raise SessionError(
                f"A session-bound {self.label} lives on the event loop of its first call; use it either "
                "only with sync calls or only with async ones, or open another session with with_session().",
                code="session_loop_mismatch",
            )

    @property
    def session_id(self) -> str | None:
        """Cursor's id of the conversation, once opened."""
        return self.session.session_id if self.session is not None else None

    async def discard(self) -> None:
        """Forget the history and discard the session (only when the binding opened it)."""
        session, self.session = self.session, None
        self.history = []
        if session is not None and self.owned:
            await session.discard()

    async def aend(self) -> None:
        """End the conversation from async code, whichever loop the session lives on. Idempotent."""
        if self.session is None:
            return
        loop = self.loop
        if loop is None or loop is asyncio.get_running_loop():
            await self.discard()
            return
        # The session lives on another loop (the sync bridge's): discard it there.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.discard(), loop))

    def end(self) -> None:
        """End the conversation from sync code (sessions used through sync calls). Idempotent."""
        if self.session is None:
            return
        loop = self.loop
        bridge = SyncBridge.default()
        if loop is None or loop is bridge.loop:
            bridge.run(self.discard)
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            raise SessionError(
                f"This {self.label} session is used from the running event loop; "
                "call `await ...aend_session()` instead.",
                code="session_loop_mismatch",
            )
        asyncio.run_coroutine_threadsafe(self.discard(), loop).result()
