"""Who is calling, and a Cursor client on that caller's own account.

``CURSORPIPE_AUTH_MODE=token`` (the default): one shared account, the server's own credentials;
every caller is the same owner ``""``. ``passthrough``: the caller's bearer (or ``x-api-key``)
*is* their Cursor API key. Each key gets its own :class:`~cursorpipe.CursorClient` (so its own
:class:`~cursorpipe.auth.TokenProvider`: one exchange in flight per key, refreshed by the usual
rule), and with a shared store the exchanged token is offered to the other replicas, keyed by the
key's SHA-256. The key itself stays in this process's memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ..._redact import register_secret
from ...client import CursorClient
from ...config import CursorPipeConfig, Strategy
from ...errors import ConfigurationError
from .._errors import APIError
from ._keys import key_hash, key_label
from ._store import StateStore

if TYPE_CHECKING:  # the token type only: importing auth at run time would pull in httpx for every
    # server, while only passthrough mode exchanges tokens (issue 16: the server's idle RSS)
    from ...auth import AccessToken

__all__ = ["CALLER_KEY", "Caller", "CallerClients", "caller_from_headers", "caller_of"]

log = logging.getLogger("cursorpipe.server")

#: Clients kept per replica at most; the least recently used idle one is closed beyond that.
MAX_CLIENTS = 256
#: How long one replica's claim to exchange a key holds, and how long the others wait for its token.
EXCHANGE_CLAIM_S = 10.0
EXCHANGE_WAIT_S = 5.0
_EXCHANGE_POLL_S = 0.05


@dataclass(frozen=True)
class Caller:
    """A caller: their key (``""`` in token mode) and its SHA-256 (the session owner)."""

    key: str = field(repr=False)
    hash: str

    @property
    def label(self) -> str:
        """Short key hash for metrics and logs (``"shared"`` for the server's own account)."""
        return key_label(self.hash) if self.hash else "shared"


SHARED_CALLER = Caller("", "")
#: Where the guard middleware keeps the request's caller (ASGI scope state).
CALLER_KEY = "cursorpipe_caller"


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller the guard identified for this request (the shared caller when none)."""
    caller = scope.get("state", {}).get(CALLER_KEY)
    return caller if isinstance(caller, Caller) else SHARED_CALLER


def _presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def caller_from_headers(
    headers: Mapping[str, str], *, passthrough: bool, allowed: frozenset[str] | None
) -> Caller:
    """The caller of a request. Passthrough: 401 without a key, 403 for a key not on the allow
    list (the key is never echoed back)."""
    if not passthrough:
        return SHARED_CALLER
    key = _presented_key(headers)
    if key is None:
        raise APIError(
            401,
            "This gateway runs each request on the caller's own Cursor account: send your Cursor API "
            "key as 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
            type="authentication_error",
            code="missing_api_key",
            should_retry=False,
        )
    register_secret(key)
    hashed = key_hash(key)
    if allowed is not None and hashed not in allowed:
        log.info("refused a key not on the allow list (key %s)", key_label(hashed))
        raise APIError(
            403,
            "This API key is not allowed on this gateway (CURSORPIPE_ALLOWED_KEY_HASHES); ask its "
            f"operator to add the key's SHA-256 (it starts with {key_label(hashed)}).",
            type="permission_error",
            code="key_not_allowed",
            should_retry=False,
        )
    return Caller(key, hashed)


class _StoreTokens:
    """``SharedTokens`` of one key on the state store."""

    def __init__(self, store: StateStore, hashed: str) -> None:
        self._store = store
        self._hash = hashed

    async def get(self) -> AccessToken | None:
        token = await self._store.get_token(self._hash)
        if token is not None or await self._store.claim_exchange(self._hash, EXCHANGE_CLAIM_S):
            return token
        # Another replica is exchanging this key right now (single flight across replicas): wait
        # a little for its token; past that, exchange here (a lost claim only costs an exchange).
        deadline = time.monotonic() + EXCHANGE_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(_EXCHANGE_POLL_S)
            token = await self._store.get_token(self._hash)
            if token is not None:
                return token
        return None

    async def put(self, token: AccessToken) -> None:
        await self._store.put_token(self._hash, token)

    async def drop(self, value: str) -> None:
        await self._store.drop_token(self._hash, value)


@dataclass(eq=False)
class _Entry:
    client: CursorClient
    used: float = field(default_factory=time.monotonic)
    busy: int = 0


class CallerClients:
    """One client per caller key (passthrough mode), created on first use.

    ``base`` gives every setting but the credentials, which come from the caller. At most
    ``max_clients`` are kept; beyond that the least recently used idle one is closed."""

    def __init__(
        self, base: CursorPipeConfig, store: StateStore | None, *, max_clients: int = MAX_CLIENTS
    ) -> None:
        if base.strategy not in (Strategy.CONNECT, Strategy.AUTO):
            raise ConfigurationError(
                "CURSORPIPE_AUTH_MODE=passthrough runs every request on the caller's own key through "
                f"the connect transport; CURSORPIPE_STRATEGY={base.strategy.value} cannot do that.",
                code="invalid_config",
            )
        self._config = base.model_copy(update={"strategy": Strategy.CONNECT, "auth_token": SecretStr("")})
        self._store = store
        self._max = max_clients
        self._clients: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._clients)

    async def acquire(self, caller: Caller) -> CursorClient:
        """The caller's client, marked busy until :meth:`release` (busy clients are never closed)."""
        entry = self._clients.get(caller.hash)
        if entry is None:
            await self._make_room()
            entry = self._clients.get(caller.hash)  # another request may have made it meanwhile
        if entry is None:
            entry = self._clients[caller.hash] = _Entry(self._new_client(caller))
        entry.busy += 1
        entry.used = time.monotonic()
        return entry.client

    def release(self, caller: Caller) -> None:
        """The request of :meth:`acquire` is over."""
        entry = self._clients.get(caller.hash)
        if entry is not None:
            entry.busy = max(0, entry.busy - 1)
            entry.used = time.monotonic()

    def _new_client(self, caller: Caller) -> CursorClient:
        from ...transports.connect import ConnectTransport

        config = self._config.model_copy(update={"api_key": SecretStr(caller.key)})
        transport = ConnectTransport(config)
        if self._store is not None and self._store.shared:
            # Before the client's first request: its very first exchange may be avoided.
            transport.auth.shared = _StoreTokens(self._store, caller.hash)
        return CursorClient(config, transport=transport)

    async def _make_room(self) -> None:
        while len(self._clients) >= self._max:
            idle = [(e.used, h) for h, e in self._clients.items() if e.busy == 0]
            if not idle:
                return  # every client is serving a request: allow more for now
            _, oldest = min(idle)
            entry = self._clients.pop(oldest)
            with contextlib.suppress(Exception):
                await entry.client.close()

    async def aclose(self) -> None:
        """Close every client (server shutdown)."""
        entries = list(self._clients.values())
        self._clients.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.client.close()
