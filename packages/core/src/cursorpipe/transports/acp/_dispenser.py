"""The session dispenser: fresh ACP sessions, ready before they are needed.

``session/new`` costs a network round trip (≈2.5 s on Cursor, acp.md §3.1), so a pool of
never-used sessions is kept warm. A session handed out is never taken back: a used session holds a
conversation, and reusing it would leak one caller's history into another's turn. When the pool is
empty, a session is created on demand; the pool refills in the background. Sessions of a process
that died are dropped (they died with it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import CursorPipeError

if TYPE_CHECKING:
    from ._connection import AcpConnection
    from ._models import ModelCatalog

__all__ = ["SessionDispenser", "SessionHandle"]

log = logging.getLogger("cursorpipe.acp")

#: At most this many sessions are created at once by a refill.
REFILL_BATCH = 8


@dataclass(eq=False)
class SessionHandle:
    """One ACP session of one process."""

    id: str
    conn: AcpConnection
    catalog: ModelCatalog
    model_value: str | None
    mode: str | None
    used: bool = False
    settling: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def usable(self) -> bool:
        """Alive and never prompted."""
        return self.conn.alive and not self.used


class SessionDispenser:
    """Hands out fresh sessions, keeping at least ``target`` of them ready (refills come in
    batches of up to a quarter of the pool, so up to ``target + target // 4 - 1`` can wait)."""

    def __init__(
        self,
        create: Callable[[], Awaitable[SessionHandle]],
        *,
        prepare: Callable[[SessionHandle], Awaitable[None]] | None = None,
    ) -> None:
        self._create = create
        # Run on pooled sessions only (e.g. switch to the model requests use): an on-demand
        # session is prepared by the request that takes it, which knows what it wants.
        self._prepare = prepare
        self._ready: deque[SessionHandle] = deque()
        self._target = 0
        self._refill: asyncio.Task[None] | None = None
        self.created = 0
        self.on_demand = 0

    @property
    def ready(self) -> int:
        """Fresh sessions waiting in the pool."""
        self._prune()  # then every pooled session is usable (see _prune): no scan per call
        return len(self._ready)

    @property
    def target(self) -> int:
        """How many fresh sessions the pool keeps."""
        return self._target

    def set_target(self, size: int) -> None:
        """Keep ``size`` sessions ready (starts refilling)."""
        self._target = max(0, size)
        self.kick()

    async def fill(self) -> None:
        """Wait until the pool holds ``target`` sessions (or a creation failed)."""
        self.kick()
        if self._refill is not None:
            await asyncio.shield(self._refill)

    def kick(self) -> None:
        """Start a background refill if the pool is short and none is running."""
        self._prune()
        if len(self._ready) >= self._target:
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.get_running_loop().create_task(self._run_refill(), name="acp-pool-refill")

    def _prune(self) -> None:
        # Pooled handles are never used (take() removes them) and were appended in creation
        # order, so they only turn unusable when their process dies, oldest first: when the
        # oldest is fine, all are, and the O(pool) rebuild per take() is skipped (issue 16).
        if self._ready and not (self._ready[0].usable and self._ready[-1].usable):
            self._ready = deque(h for h in self._ready if h.usable)

    async def _run_refill(self) -> None:
        while True:
            self._prune()
            missing = self._target - len(self._ready)
            if missing <= 0:
                return
            # Several sessions at once: their requests and answers share reads, writes and
            # wake-ups instead of paying round trip after round trip (issue 16). When a single
            # session is missing, a quarter of the pool (at most REFILL_BATCH) is made anyway,
            # so sequential requests refill in batches too; the pool then holds a few more than
            # ``target`` until requests use them. Bounded, so a large pool never floods the agent.
            batch = min(max(missing, self._target // 4), REFILL_BATCH)
            if batch == 1:
                results: list[SessionHandle | BaseException] = []
                try:
                    results.append(await self._one())
                except CursorPipeError as exc:
                    results.append(exc)
            else:
                results = await asyncio.gather(*(self._one() for _ in range(batch)), return_exceptions=True)
            failed: CursorPipeError | None = None
            for result in results:
                if isinstance(result, SessionHandle):
                    self.created += 1
                    self._ready.append(result)
                elif isinstance(result, CursorPipeError):
                    failed = result
                else:
                    raise result  # not a creation failure (a bug, a cancellation): not ours to hide
            if failed is not None:
                # Requests still work (on demand) and report the error themselves.
                log.warning("acp: could not pre-create a session: %s", failed)
                return

    async def _one(self) -> SessionHandle:
        handle = await self._create()
        if self._prepare is not None:
            await self._prepare(handle)
        return handle

    async def take(self) -> SessionHandle:
        """A fresh session for one caller (pooled if one is ready, else created now)."""
        while self._ready:
            handle = self._ready.popleft()
            if handle.usable:
                handle.used = True
                self.kick()
                return handle
        self.kick()
        self.on_demand += 1
        handle = await self._create()
        self.created += 1
        handle.used = True
        return handle

    def give_back_unused(self, handle: SessionHandle) -> None:
        """Return a session that was created but never handed to a caller."""
        if handle.usable:
            self._ready.append(handle)

    def clear(self) -> None:
        """Forget every pooled session (their process is gone)."""
        self._ready.clear()

    async def aclose(self) -> None:
        """Stop refilling."""
        self._target = 0
        self._ready.clear()
        if self._refill is not None and not self._refill.done():
            self._refill.cancel()
            await asyncio.wait({self._refill}, timeout=5.0)
