"""The state a session needs to continue on any replica, behind one small interface.

``StateStore`` is what the server uses; :class:`MemoryStore` keeps everything in this process
(one replica, nothing to install), :class:`~._redis.RedisStore` shares it between replicas. Both
follow the same rules, pinned by the same tests:

- a session record (owner key hash, model, dialect, the conversation snapshot) and its blobs live
  for ``ttl_s`` after their last write (idle expiry);
- one turn at a time per session: :meth:`StateStore.acquire` hands out a :class:`Lease` that
  expires unless renewed (a dead replica's lease does not wedge the session), and every lease
  carries a fencing value that grows with each acquisition;
- :meth:`StateStore.commit_turn` writes a turn's record and new blobs together, and only while the
  lease is still the current one: a holder whose lease expired (and was perhaps taken by another
  replica) is refused, so a stale turn can never overwrite a newer one;
- exchanged access tokens may be cached by key hash so N replicas do not exchange N times.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import NetworkError, SessionError

if TYPE_CHECKING:  # annotations only: auth (and httpx with it) loads when passthrough mode does
    from ...auth import AccessToken

__all__ = [
    "Lease",
    "LeaseLostError",
    "MemoryStore",
    "SessionBusyError",
    "SessionRecord",
    "StateStore",
    "StateUnavailableError",
]

#: Polling interval bounds while waiting for a busy session's lease.
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.2


class StateUnavailableError(NetworkError):
    """The shared state store cannot be reached: requests that need a session cannot be served
    right now (stateless requests still can)."""

    default_code = "state_unavailable"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", True)
        kwargs.setdefault("retry_after", 2.0)
        super().__init__(message, **kwargs)


class SessionBusyError(SessionError):
    """Another turn of the session held its lease for longer than the caller was willing to wait."""

    default_code = "session_busy"


class LeaseLostError(SessionError):
    """The lease expired or was taken over before the turn could be committed: nothing of the turn
    was written."""

    default_code = "session_lease_lost"


@dataclass
class SessionRecord:
    """A session as stored: everything but its blobs (kept apart, written incrementally)."""

    id: str
    owner: str
    """SHA-256 of the caller's key (never the key); "" for the server's own account."""
    model: str
    transport: str = "connect"
    dialect: str | None = None
    """The connect wire dialect the conversation runs on (``cli``/``sdk``)."""
    conversation: dict[str, Any] = field(default_factory=dict)
    """The conversation snapshot's metadata (see ``transports/connect/_snapshot.py``)."""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def turns(self) -> int:
        """Completed turns."""
        turns = self.conversation.get("turns", 0)
        return turns if isinstance(turns, int) else 0

    def dumps(self) -> str:
        """JSON text for the store."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> SessionRecord:
        """The record from :meth:`dumps` output; damaged data is a ``SessionError``."""
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise SessionError("Stored session record is damaged.", code="session_state_invalid") from exc


@dataclass(frozen=True)
class Lease:
    """The right to run one turn of ``session_id``. ``value`` is unique per acquisition;
    ``fence`` grows with every acquisition of the same session (a fencing token)."""

    session_id: str
    value: str = field(repr=False)

    @property
    def fence(self) -> int:
        """The fencing number of this lease."""
        return int(self.value.split(":", 1)[0])


def lease_lost(session_id: str) -> LeaseLostError:
    """The error for a commit refused because its lease is no longer current."""
    return LeaseLostError(
        f"Session {session_id!r}: this turn's lease expired before it could be saved, so the turn "
        "was not kept. Retry it.",
        retryable=True,
    )


def deleted_meanwhile(session_id: str) -> SessionError:
    """The error for a commit to a session deleted (or expired) during the turn."""
    return SessionError(f"Session {session_id!r} was deleted during the turn.", code="session_not_found")


def new_lease_value(fence: int) -> str:
    """A lease value: the fencing number and a random part (unique even if a counter restarts)."""
    return f"{fence}:{secrets.token_hex(8)}"


class StateStore(ABC):
    """Sessions, their leases and cached tokens; see the module docstring for the rules."""

    #: Sessions (and their blobs) expire this long after their last write.
    ttl_s: float
    #: Whether the state is shared with other processes.
    shared: bool = False

    # -- sessions ------------------------------------------------------------------------------
    @abstractmethod
    async def create(self, record: SessionRecord) -> bool:
        """Store a new session; ``False`` when one with this id exists."""

    @abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None:
        """The session record (without blobs), or ``None``."""

    @abstractmethod
    async def load(self, session_id: str) -> tuple[SessionRecord, dict[bytes, bytes]] | None:
        """The record and its blobs as of one committed turn, or ``None``."""

    @abstractmethod
    async def list(self, owner: str) -> list[SessionRecord]:
        """The live sessions of ``owner``."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove a session with its blobs and lease; ``False`` when there was none."""

    # -- leases ---------------------------------------------------------------------------------
    @abstractmethod
    async def try_acquire(self, session_id: str, ttl_s: float) -> Lease | None:
        """The session's lease if it is free now, else ``None``."""

    @abstractmethod
    async def renew(self, lease: Lease, ttl_s: float) -> bool:
        """Extend a lease still held; ``False`` when it was lost."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a lease back (no effect when it was already lost)."""

    @abstractmethod
    async def commit_turn(self, lease: Lease, record: SessionRecord, new_blobs: dict[bytes, bytes]) -> None:
        """Write ``record`` and ``new_blobs`` together, only while ``lease`` is current; otherwise
        raise :class:`LeaseLostError` and write nothing."""

    async def acquire(self, session_id: str, ttl_s: float, wait_s: float) -> Lease:
        """The session's lease, waiting up to ``wait_s`` for the turn in progress to end."""
        deadline = time.monotonic() + wait_s
        pause = _POLL_FIRST_S
        while True:
            lease = await self.try_acquire(session_id, ttl_s)
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionBusyError(
                    f"Session {session_id!r} is running another turn; retry when it has finished.",
                    retryable=True,
                    retry_after=1.0,
                )
            await asyncio.sleep(min(pause, left))
            pause = min(_POLL_MAX_S, pause * 2)

    # -- tokens ---------------------------------------------------------------------------------
    @abstractmethod
    async def get_token(self, key_hash: str) -> AccessToken | None:
        """A cached access token for a key hash, if one is stored and unexpired."""

    @abstractmethod
    async def put_token(self, key_hash: str, token: AccessToken) -> None:
        """Cache an access token until it expires."""

    @abstractmethod
    async def drop_token(self, key_hash: str, value: str) -> None:
        """Forget the cached token if it is still ``value`` (after Cursor refused it)."""

    async def claim_exchange(self, key_hash: str, ttl_s: float) -> bool:
        """Whether this process may exchange the key now: ``False`` while another process holds
        the claim (for ``ttl_s`` at most, or until it stores its token). One process: always."""
        return True

    # -- lifecycle ------------------------------------------------------------------------------
    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StateUnavailableError` when the store cannot be reached."""

    async def sweep(self) -> int:
        """Forget expired sessions now (a store that expires them by itself has nothing to do)."""
        return 0

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


@dataclass
class _Held:
    value: str
    expires: float


class MemoryStore(StateStore):
    """Everything in this process (no sharing): the single-replica default of the store API."""

    def __init__(self, ttl_s: float, *, clock: Any = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._records: dict[str, tuple[SessionRecord, float]] = {}
        self._blobs: dict[str, dict[bytes, bytes]] = {}
        self._leases: dict[str, _Held] = {}
        self._fences: dict[str, int] = {}
        self._tokens: dict[str, AccessToken] = {}

    def _live(self, session_id: str) -> SessionRecord | None:
        item = self._records.get(session_id)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._forget(session_id)
            return None
        return item[0]

    def _forget(self, session_id: str) -> None:
        self._records.pop(session_id, None)
        self._blobs.pop(session_id, None)
        self._leases.pop(session_id, None)

    async def create(self, record: SessionRecord) -> bool:
        if self._live(record.id) is not None:
            return False
        self._records[record.id] = (_copy(record), self._clock() + self.ttl_s)
        self._blobs[record.id] = {}
        return True

    async def get(self, session_id: str) -> SessionRecord | None:
        record = self._live(session_id)
        return _copy(record) if record is not None else None

    async def load(self, session_id: str) -> tuple[SessionRecord, dict[bytes, bytes]] | None:
        record = self._live(session_id)
        if record is None:
            return None
        return _copy(record), dict(self._blobs.get(session_id, {}))

    async def list(self, owner: str) -> list[SessionRecord]:
        out = []
        for sid in list(self._records):
            record = self._live(sid)
            if record is not None and record.owner == owner:
                out.append(_copy(record))
        return out

    async def delete(self, session_id: str) -> bool:
        existed = self._live(session_id) is not None
        self._forget(session_id)
        return existed

    async def try_acquire(self, session_id: str, ttl_s: float) -> Lease | None:
        now = self._clock()
        held = self._leases.get(session_id)
        if held is not None and held.expires > now:
            return None
        fence = self._fences.get(session_id, 0) + 1
        self._fences[session_id] = fence
        value = new_lease_value(fence)
        self._leases[session_id] = _Held(value, now + ttl_s)
        return Lease(session_id, value)

    def _holds(self, lease: Lease) -> bool:
        held = self._leases.get(lease.session_id)
        return held is not None and held.value == lease.value and held.expires > self._clock()

    async def renew(self, lease: Lease, ttl_s: float) -> bool:
        if not self._holds(lease):
            return False
        self._leases[lease.session_id].expires = self._clock() + ttl_s
        return True

    async def release(self, lease: Lease) -> None:
        if self._holds(lease):
            del self._leases[lease.session_id]

    async def commit_turn(self, lease: Lease, record: SessionRecord, new_blobs: dict[bytes, bytes]) -> None:
        if not self._holds(lease):
            raise lease_lost(lease.session_id)
        if self._live(lease.session_id) is None:
            raise deleted_meanwhile(lease.session_id)
        self._records[lease.session_id] = (_copy(record), self._clock() + self.ttl_s)
        self._blobs.setdefault(lease.session_id, {}).update(new_blobs)

    async def get_token(self, key_hash: str) -> AccessToken | None:
        token = self._tokens.get(key_hash)
        if token is not None and token.expires_at <= time.time():
            del self._tokens[key_hash]
            return None
        return token

    async def put_token(self, key_hash: str, token: AccessToken) -> None:
        self._tokens[key_hash] = token

    async def drop_token(self, key_hash: str, value: str) -> None:
        token = self._tokens.get(key_hash)
        if token is not None and token.value == value:
            del self._tokens[key_hash]

    async def ping(self) -> None:
        return None

    async def sweep(self) -> int:
        expired = [sid for sid in list(self._records) if self._live(sid) is None]
        now = time.time()
        for key_hash in [k for k, t in self._tokens.items() if t.expires_at <= now]:
            del self._tokens[key_hash]
        return len(expired)


def _copy(record: SessionRecord) -> SessionRecord:
    # Callers may change what they get; the store keeps its own copy, as a shared store would.
    return SessionRecord.loads(record.dumps())
