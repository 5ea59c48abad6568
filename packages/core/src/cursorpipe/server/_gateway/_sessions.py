"""Sessions kept in a :class:`~._store.StateStore`, so any replica can run a session's next turn.

A turn: check the owner, take the session's lease (waiting for a turn in progress on any replica),
load the last committed conversation, run the turn on the caller's client, and when the turn has
ended commit the new checkpoint and blobs together under the lease; only then is the turn's end
handed to the caller. A turn that fails, is cancelled, or whose replica dies commits nothing: the
session stays at its last committed turn and the lease expires (``lock_ttl_s``) if nobody gives it
back. While the turn runs the lease is renewed every third of its lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from types import ModuleType
from typing import Any, Protocol

from ...client import CursorClient
from ...errors import CursorPipeError
from ...transports.base import TransportSession
from ...types import ChatMessage, Event, TurnEnd
from .._errors import APIError
from ._callers import Caller
from ._store import Lease, LeaseLostError, SessionBusyError, SessionRecord, StateStore, StateUnavailableError


def _snapshots() -> ModuleType:
    """The connect transport's conversation export, imported on first use: only shared sessions
    need it, and importing it at start-up would load the connect transport and protobuf into every
    server (issue 16: the server's idle RSS and import time)."""
    from ...transports.connect import _snapshot

    return _snapshot


__all__ = ["ClientSource", "SharedSessions", "SingleClient", "gateway_error", "session_turn"]

log = logging.getLogger("cursorpipe.server")

#: Runs one turn: ``(client, conversation, model) -> events`` (see :func:`session_turn`).
TurnFn = Callable[[CursorClient, TransportSession, str], AsyncGenerator[Event, None]]


def session_turn(
    text: str,
    *,
    system: str | None = None,
    timeout_s: float | None = None,
    stop: Sequence[str] | None = None,
    max_tokens: int | None = None,
    reasoning_effort: str | None = None,
) -> TurnFn:
    """The turn of a session whose next user message is ``text`` (what ``CursorSession.events``
    runs, on a conversation loaded from the store)."""

    def run(client: CursorClient, handle: TransportSession, model: str) -> AsyncGenerator[Event, None]:
        request = client.build_request(
            model,
            [ChatMessage.of("user", text)],
            system=system,
            timeout_s=timeout_s,
            max_tokens=max_tokens,
            reasoning_effort=reasoning_effort,
        )
        return client.run_request(request, session=handle, stop=stop)

    return run


class ClientSource(Protocol):
    """Where a caller's client comes from: :class:`CallerClients` or :class:`SingleClient`."""

    async def acquire(self, caller: Caller) -> CursorClient: ...

    def release(self, caller: Caller) -> None: ...


class SingleClient:
    """Token mode: every caller uses the server's one client."""

    def __init__(self, client: CursorClient) -> None:
        self.client = client

    async def acquire(self, caller: Caller) -> CursorClient:
        return self.client

    def release(self, caller: Caller) -> None:
        return None


def gateway_error(exc: CursorPipeError) -> APIError | None:
    """The HTTP answer for the gateway's own failures (``None`` for any other error)."""
    if isinstance(exc, StateUnavailableError):
        return APIError(
            503,
            exc.message,
            type="server_error",
            code=exc.code,
            retry_after=exc.retry_after or 2.0,
            should_retry=True,
        )
    if isinstance(exc, SessionBusyError | LeaseLostError):
        return APIError(409, exc.message, code=exc.code, retry_after=1.0, should_retry=True)
    return None


def _dialect(transport: Any) -> str | None:
    """The connect wire dialect the transport speaks now (``None`` for other transports)."""
    dialect = getattr(getattr(transport, "wire", None), "dialect", None)
    return dialect if isinstance(dialect, str) else None


def _not_found(session_id: str) -> APIError:
    return APIError(
        404,
        f"No session {session_id!r} (it may have expired).",
        param="session_id",
        type="not_found_error",
        code="session_not_found",
    )


def _forbidden(session_id: str) -> APIError:
    return APIError(
        403,
        f"Session {session_id!r} belongs to another API key; a session is only usable by the caller "
        "who created it.",
        type="permission_error",
        code="session_forbidden",
        should_retry=False,
    )


class SharedSessions:
    """The server's sessions on a :class:`StateStore` (any replica, owner-checked)."""

    def __init__(
        self,
        store: StateStore,
        clients: ClientSource,
        *,
        lock_ttl_s: float,
        lock_wait_s: float,
    ) -> None:
        self.store = store
        self.clients = clients
        self.lock_ttl_s = lock_ttl_s
        self.lock_wait_s = lock_wait_s

    @property
    def idle_s(self) -> float:
        """Idle expiry of sessions (the store's TTL)."""
        return self.store.ttl_s

    # -- records ------------------------------------------------------------------------------
    async def _owned(self, caller: Caller, session_id: str) -> SessionRecord:
        record = await self.store.get(session_id)
        if record is None:
            raise _not_found(session_id)
        if record.owner != caller.hash:
            raise _forbidden(session_id)
        return record

    async def create(self, caller: Caller, model: str, session_id: str | None = None) -> SessionRecord:
        """A new session owned by ``caller`` (409 when the id is taken)."""
        sid = session_id or "sess_" + secrets.token_hex(12)
        client = await self.clients.acquire(caller)
        try:
            transport = await client.transport()
            name = (model or "").strip() or client.config.default_model
            handle = await transport.open_session(name)  # validates the model for this account
            try:
                snapshot = _snapshots().export_conversation(handle)
            finally:
                await transport.close_session(handle)
        finally:
            self.clients.release(caller)
        record = SessionRecord(
            id=sid,
            owner=caller.hash,
            model=name,
            transport=transport.name,
            dialect=_dialect(transport),
            conversation=snapshot.meta,
        )
        if not await self.store.create(record):
            raise APIError(
                409, f"Session {sid!r} already exists.", param="id", code="session_exists", should_retry=False
            )
        log.info("session %s opened (model %s, owner %s)", sid, record.model, caller.label)
        return record

    async def get(self, caller: Caller, session_id: str) -> SessionRecord:
        """The caller's session (404 unknown, 403 someone else's)."""
        return await self._owned(caller, session_id)

    async def get_or_create(self, caller: Caller, session_id: str, model: str) -> tuple[SessionRecord, bool]:
        """The session named by the header; a new one if it does not exist yet."""
        record = await self.store.get(session_id)
        if record is None:
            try:
                return await self.create(caller, model, session_id), True
            except APIError as exc:
                if exc.code != "session_exists":
                    raise
        return await self._owned(caller, session_id), False

    async def list(self, caller: Caller) -> list[SessionRecord]:
        """The caller's live sessions."""
        return await self.store.list(caller.hash)

    async def delete(self, caller: Caller, session_id: str) -> SessionRecord:
        """Remove the caller's session."""
        record = await self._owned(caller, session_id)
        await self.store.delete(session_id)
        log.info("session %s deleted", session_id)
        return record

    def view(self, record: SessionRecord) -> dict[str, Any]:
        """JSON view for the /v1/sessions endpoints (the fields of the in-process view)."""
        idle = max(0.0, time.time() - record.updated)
        return {
            "id": record.id,
            "object": "session",
            "model": record.model,
            "created": int(record.created),
            "turns": record.turns,
            "idle_seconds": round(idle, 3),
            "expires_in_seconds": round(max(0.0, self.idle_s - idle), 3),
            "cursor_session_id": record.conversation.get("conversation_id"),
            "transport": record.transport,
            "dialect": record.dialect,
        }

    # -- turns ----------------------------------------------------------------------------------
    async def turn(self, caller: Caller, session_id: str, run: TurnFn) -> AsyncGenerator[Event, None]:
        """Run one turn of the caller's session under its lease; see the module docstring.

        Raises (before the first event) 404/403 :class:`APIError`, :class:`SessionBusyError` after
        ``lock_wait_s``, :class:`StateUnavailableError`; after the turn :class:`LeaseLostError` when
        the lease was lost (nothing of the turn is kept)."""
        await self._owned(caller, session_id)
        lease = await self.store.acquire(session_id, self.lock_ttl_s, self.lock_wait_s)
        keeper = asyncio.create_task(self._keep(lease), name="cursorpipe-lease")
        try:
            async with aclosing(self._turn_under(lease, caller, run)) as events:
                async for event in events:
                    yield event
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(CursorPipeError):  # unreleased, it expires after lock_ttl_s
                await self.store.release(lease)

    async def _turn_under(self, lease: Lease, caller: Caller, run: TurnFn) -> AsyncGenerator[Event, None]:
        loaded = await self.store.load(lease.session_id)
        if loaded is None:
            raise _not_found(lease.session_id)
        record, blobs = loaded
        if record.owner != caller.hash:
            raise _forbidden(lease.session_id)
        client = await self.clients.acquire(caller)
        try:
            transport = await client.transport()
            snaps = _snapshots()
            state = snaps.import_conversation(snaps.ConversationSnapshot(record.conversation, blobs))
            ended: TurnEnd | None = None
            async with aclosing(run(client, state, record.model)) as events:
                async for event in events:
                    if isinstance(event, TurnEnd):
                        ended = event  # handed on only once the turn is committed
                    else:
                        yield event
            if ended is None:
                return
            await self._commit(lease, record, blobs, state, transport)
            yield ended
        finally:
            self.clients.release(caller)

    async def _commit(
        self, lease: Lease, record: SessionRecord, before: dict[bytes, bytes], state: Any, transport: Any
    ) -> None:
        snapshot = _snapshots().export_conversation(state)
        new_blobs = {k: v for k, v in snapshot.blobs.items() if before.get(k) != v}
        record.conversation = snapshot.meta
        record.updated = time.time()
        record.dialect = _dialect(transport) or record.dialect
        await self.store.commit_turn(lease, record, new_blobs)

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease while the turn runs; a lost lease is logged (its commit will fail)."""
        while True:
            await asyncio.sleep(self.lock_ttl_s / 3)
            try:
                if not await self.store.renew(lease, self.lock_ttl_s):
                    log.warning("session %s: lease lost mid-turn (not kept)", lease.session_id)
                    return
            except CursorPipeError as exc:
                log.warning("session %s: could not renew the lease (%s)", lease.session_id, exc.code)
