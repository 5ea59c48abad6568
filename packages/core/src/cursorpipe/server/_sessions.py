"""Server-side sessions: the ``X-Cursor-Session-ID`` header maps to a :class:`CursorSession`, so
Cursor keeps the history and each turn sends only the new message. Idle sessions expire after
``CURSORPIPE_SESSION_IDLE_S``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..client import CursorClient
from ..session import CursorSession
from ..types import Event
from ._errors import APIError

__all__ = ["SESSION_HEADER", "SessionEntry", "SessionRegistry"]

log = logging.getLogger("cursorpipe.server")

SESSION_HEADER = "X-Cursor-Session-ID"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
MAX_SESSIONS = 1024


@dataclass(eq=False)
class SessionEntry:
    """One server session."""

    id: str
    session: CursorSession
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0

    def as_dict(self, idle_s: float) -> dict[str, Any]:
        """JSON view for the /v1/sessions endpoints."""
        idle = time.monotonic() - self.last_used
        return {
            "id": self.id,
            "object": "session",
            "model": self.session.model,
            "created": int(self.created),
            "turns": self.session.turn_count,
            "busy": self.busy > 0,
            "idle_seconds": round(idle, 3),
            "expires_in_seconds": None if self.busy else round(max(0.0, idle_s - idle), 3),
            "cursor_session_id": self.session.session_id,
            "transport": self.session.transport_name,
        }


class SessionRegistry:
    """Sessions by id, with idle expiry. All mutations happen under one lock; I/O (opening and
    discarding Cursor sessions) happens outside it where possible (design.md lesson 6)."""

    def __init__(self, client: CursorClient, idle_s: float) -> None:
        self._client = client
        self.idle_s = idle_s
        self._entries: dict[str, SessionEntry] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def check_id(session_id: str) -> str:
        """Validate a client-chosen session id."""
        if not _ID.match(session_id):
            raise APIError(
                400,
                f"Invalid {SESSION_HEADER}: use 1-128 characters from A-Z a-z 0-9 _ . : - "
                "(starting with a letter or digit).",
                param=SESSION_HEADER,
                code="invalid_session_id",
            )
        return session_id

    def list(self) -> list[SessionEntry]:
        """All live sessions."""
        return list(self._entries.values())

    def get(self, session_id: str) -> SessionEntry:
        """The session, or a 404."""
        entry = self._entries.get(session_id)
        if entry is None:
            raise APIError(
                404,
                f"No session {session_id!r} (it may have expired).",
                param="session_id",
                type="not_found_error",
                code="session_not_found",
            )
        return entry

    async def create(self, model: str, session_id: str | None = None) -> SessionEntry:
        """Open a new Cursor session under ``session_id`` (generated when ``None``)."""
        sid = self.check_id(session_id) if session_id else "sess_" + secrets.token_hex(12)
        async with self._lock:
            if sid in self._entries:
                raise APIError(
                    409,
                    f"Session {sid!r} already exists.",
                    param="id",
                    code="session_exists",
                    should_retry=False,
                )
            if len(self._entries) >= MAX_SESSIONS:
                raise APIError(
                    429,
                    f"Too many open sessions ({MAX_SESSIONS}); delete some or wait for idle expiry.",
                    type="rate_limit_error",
                    code="too_many_sessions",
                    should_retry=False,
                )
            session = await self._client.create_session(model or None)
            entry = SessionEntry(id=sid, session=session)
            self._entries[sid] = entry
        log.info("session %s opened (model %s)", sid, session.model)
        return entry

    async def get_or_create(self, session_id: str, model: str) -> tuple[SessionEntry, bool]:
        """The session named by the header; a new one if it does not exist yet."""
        self.check_id(session_id)
        entry = self._entries.get(session_id)
        if entry is not None:
            return entry, False
        try:
            return await self.create(model, session_id), True
        except APIError as exc:
            if exc.code != "session_exists":
                raise
            return self.get(session_id), False

    async def delete(self, session_id: str) -> SessionEntry:
        """Discard a session (404 when unknown)."""
        async with self._lock:
            entry = self.get(session_id)
            del self._entries[session_id]
        await entry.session.discard()
        log.info("session %s deleted", session_id)
        return entry

    async def track(
        self, entry: SessionEntry, stream: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        """Mark the session busy while ``stream`` runs (busy sessions never expire)."""
        entry.busy += 1
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    yield event
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()

    async def sweep(self) -> int:
        """Discard sessions idle for longer than ``idle_s``; returns how many."""
        now = time.monotonic()
        async with self._lock:
            expired = [e for e in self._entries.values() if not e.busy and now - e.last_used >= self.idle_s]
            for entry in expired:
                del self._entries[entry.id]
        for entry in expired:
            with contextlib.suppress(Exception):
                await entry.session.discard()
            log.info("session %s expired after %.0f s idle", entry.id, self.idle_s)
        return len(expired)

    async def close_all(self) -> None:
        """Discard every session (server shutdown)."""
        async with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.session.discard()
