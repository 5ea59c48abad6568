"""``Gateway``: the team-gateway pieces the server uses, built from the configuration.

``Gateway.from_config`` returns ``None`` for the single-process default (``auth_mode=token`` and no
``state_url``), so that path keeps its in-process session registry and nothing of this package
runs. Otherwise it bundles: who the caller is (:func:`caller_from_headers`), the caller's client,
the per-key limits (passthrough only: in token mode every request is the same caller), and the
sessions on the state store (Redis when ``state_url`` is set, else in-process).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

from ...client import CursorClient
from ...config import CursorPipeConfig
from ...errors import CursorPipeError
from ...types import Event
from ._callers import Caller, CallerClients, caller_from_headers
from ._keys import parse_allow_list
from ._limits import CallerLimits, CallerMetrics
from ._sessions import ClientSource, SharedSessions, SingleClient
from ._store import MemoryStore, StateStore

__all__ = ["Gateway"]

log = logging.getLogger("cursorpipe.server")


class Gateway:
    """Per-caller credentials, per-key limits and shared sessions for one app."""

    def __init__(
        self,
        config: CursorPipeConfig,
        store: StateStore,
        clients: ClientSource,
        *,
        metrics_registry: Any | None = None,
    ) -> None:
        self.config = config
        self.passthrough = config.auth_mode == "passthrough"
        self.allowed = parse_allow_list(config.allowed_key_hashes)
        self.store = store
        self.clients = clients
        self.sessions = SharedSessions(
            store, clients, lock_ttl_s=config.session_lock_ttl_s, lock_wait_s=config.session_lock_wait_s
        )
        self.limits: CallerLimits | None = None
        if self.passthrough:
            self.limits = CallerLimits(
                concurrency=config.per_key_limit,
                rate_per_min=config.per_key_rate_per_min,
                burst=config.per_key_burst,
                queue_timeout_s=config.queue_timeout_s,
                metrics=CallerMetrics(metrics_registry),
            )

    @classmethod
    def from_config(
        cls, config: CursorPipeConfig, client: CursorClient, *, metrics_registry: Any | None = None
    ) -> Gateway | None:
        """The gateway the configuration asks for, or ``None`` for the plain single-process server."""
        url = config.state_url.get_secret_value()
        if config.auth_mode == "token" and not url:
            return None
        store: StateStore
        if url:
            from ._redis import RedisStore

            store = RedisStore(url, config.session_idle_s, prefix=config.state_prefix)
        else:
            store = MemoryStore(config.session_idle_s)
        passthrough = config.auth_mode == "passthrough"
        clients: ClientSource = CallerClients(config, store) if passthrough else SingleClient(client)
        return cls(config, store, clients, metrics_registry=metrics_registry)

    @property
    def shared(self) -> bool:
        """Whether the state is shared with other replicas."""
        return self.store.shared

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """The caller of a request (401/403 :class:`APIError` in passthrough mode)."""
        return caller_from_headers(headers, passthrough=self.passthrough, allowed=self.allowed)

    def admit(self, caller: Caller) -> contextlib.AbstractAsyncContextManager[None]:
        """The caller's slot for one request (passthrough: per-key concurrency and rate, 429
        :class:`APIError` beyond them). The guard middleware takes it before the server-wide gate,
        so a caller's queued burst never holds the slots other callers need."""
        return self.limits.slot(caller.label) if self.limits is not None else contextlib.nullcontext()

    @asynccontextmanager
    async def client_for(self, caller: Caller) -> AsyncIterator[CursorClient]:
        """The caller's client for the duration of one request."""
        client = await self.clients.acquire(caller)
        try:
            yield client
        finally:
            self.clients.release(caller)

    async def events(
        self, caller: Caller, run: Callable[[CursorClient], AsyncGenerator[Event, None]]
    ) -> AsyncGenerator[Event, None]:
        """A stateless request's events on the caller's client (kept while the stream runs)."""
        async with self.client_for(caller) as client, aclosing(run(client)) as events:
            async for event in events:
                yield event

    async def state_problem(self) -> str | None:
        """Why the shared store is unusable now (for /health), or ``None``."""
        try:
            await self.store.ping()
        except CursorPipeError as exc:
            return exc.message
        return None

    async def aclose(self) -> None:
        """Close per-caller clients and the store's connections."""
        if isinstance(self.clients, CallerClients):
            await self.clients.aclose()
        await self.store.aclose()
