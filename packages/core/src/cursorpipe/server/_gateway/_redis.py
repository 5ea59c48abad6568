"""``RedisStore``: the session store shared by replicas, on Redis or Valkey (``redis.asyncio``).

Keys (``prefix`` defaults to ``cursorpipe:``); the session id is a hash tag so a session's keys
share one cluster slot and its scripts stay valid on a cluster:

- ``{prefix}session:{<id>}`` the record (JSON), ``...:blobs`` a hash of blob id -> bytes, both
  expiring ``ttl_s`` after the last commit; ``...:lock`` the lease value, expiring unless renewed;
  ``...:fence`` the counter the fencing numbers come from;
- ``{prefix}owner:<key hash>`` a sorted set of the owner's session ids (listing);
- ``{prefix}token:<key hash>`` a cached access token, expiring with the token.

No key, value or error message holds a caller's API key: owners and tokens are keyed by the
key's SHA-256. Every state change that must be all-or-nothing is one Lua script (atomic in Redis).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..._redact import register_secret
from ...auth import AccessToken
from ._store import (
    Lease,
    SessionRecord,
    StateStore,
    StateUnavailableError,
    deleted_meanwhile,
    lease_lost,
    new_lease_value,
)

__all__ = ["RedisStore"]

T = TypeVar("T")

# KEYS: lock, fence. ARGV: lease ttl ms, random part, fence ttl ms. The fence counter outlives the
# session's records so a fencing number is never handed out twice while a holder may be alive.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local v = n .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], v, 'PX', ARGV[1])
return v
"""
# KEYS: lock. ARGV: lease value, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lock, record, blobs. ARGV: lease value, record JSON, ttl ms, then blob id/data pairs.
# 0 = lease lost, -1 = session gone, 1 = written (record and blobs together).
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return 1
"""
# KEYS: token. ARGV: value. Drop the cached token only if it is still the refused one.
_FORGET_CACHED = """
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['value'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: How long the fence counter outlives the session's last write (beyond ``ttl_s``).
_FENCE_MARGIN_S = 86_400.0


def _where(url: str) -> str:
    """host:port of a Redis URL, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class RedisStore(StateStore):
    """Sessions, leases and tokens in Redis; ``url`` as ``redis://[:password@]host:port/db``
    (``rediss://`` for TLS). Connection failures raise :class:`StateUnavailableError`."""

    shared = True

    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        prefix: str = "cursorpipe:",
        timeout_s: float = 2.0,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis import exceptions as rexc
        except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
            from ...errors import ConfigurationError

            raise ConfigurationError(
                "CURSORPIPE_STATE_URL needs the redis client: pip install 'cursorpipe[gateway]'.",
                code="missing_dependency",
            ) from exc
        password = urlsplit(url).password
        register_secret(password)  # never in logs or errors
        self.ttl_s = ttl_s
        self.where = _where(url)
        self._prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (rexc.ConnectionError, rexc.TimeoutError)
        self._redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=False
        )
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._commit = self._redis.register_script(_COMMIT)
        self._drop_token = self._redis.register_script(_FORGET_CACHED)

    # -- keys -------------------------------------------------------------------------------------
    def _session(self, sid: str, part: str = "") -> str:
        return f"{self._prefix}session:{{{sid}}}{':' + part if part else ''}"

    def _owner(self, owner: str) -> str:
        return f"{self._prefix}owner:{owner or '-'}"

    def _token(self, key_hash: str) -> str:
        return f"{self._prefix}token:{key_hash}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except self._errors as exc:
            raise StateUnavailableError(
                f"The session store ({self.where}) cannot be reached ({type(exc).__name__}); requests "
                "without a session still work. Retry shortly."
            ) from None

    # -- sessions ---------------------------------------------------------------------------------
    async def create(self, record: SessionRecord) -> bool:
        async def go() -> bool:
            key = self._session(record.id)
            created = await self._redis.set(key, record.dumps(), nx=True, px=self._ttl_ms)
            if created:
                index = self._owner(record.owner)
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zadd(index, {record.id: record.created})
                    pipe.pexpire(index, self._ttl_ms * 2)
                    await pipe.execute()
            return bool(created)

        return await self._call(go)

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._call(lambda: self._redis.get(self._session(session_id)))
        return SessionRecord.loads(raw) if raw is not None else None

    async def load(self, session_id: str) -> tuple[SessionRecord, dict[bytes, bytes]] | None:
        async def go() -> list[Any]:
            # One MULTI: the record and blobs of the same commit (commits are atomic scripts).
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._session(session_id))
                pipe.hgetall(self._session(session_id, "blobs"))
                result: list[Any] = await pipe.execute()
                return result

        raw, blobs = await self._call(go)
        if raw is None:
            return None
        return SessionRecord.loads(raw), {bytes.fromhex(k.decode()): bytes(v) for k, v in blobs.items()}

    async def list(self, owner: str) -> list[SessionRecord]:
        index = self._owner(owner)
        ids = await self._call(lambda: self._redis.zrange(index, 0, -1))
        if not ids:
            return []
        keys = [self._session(i.decode()) for i in ids]
        raws = await self._call(lambda: self._redis.mget(keys))
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:  # expired sessions leave their index entry behind; tidy it here
            await self._call(lambda: self._redis.zrem(index, *gone))
        records = [SessionRecord.loads(raw) for raw in raws if raw is not None]
        return [r for r in records if r.owner == owner]

    async def delete(self, session_id: str) -> bool:
        async def go() -> bool:
            raw = await self._redis.get(self._session(session_id))
            parts = ("", "blobs", "lock")
            removed = await self._redis.delete(*(self._session(session_id, p) for p in parts))
            if raw is not None:
                await self._redis.zrem(self._owner(SessionRecord.loads(raw).owner), session_id)
            return bool(removed) and raw is not None

        return await self._call(go)

    # -- leases -----------------------------------------------------------------------------------
    async def try_acquire(self, session_id: str, ttl_s: float) -> Lease | None:
        fence_ttl = int((self.ttl_s + _FENCE_MARGIN_S) * 1000)
        random_part = new_lease_value(0).split(":", 1)[1]
        keys = [self._session(session_id, "lock"), self._session(session_id, "fence")]
        value = await self._call(
            lambda: self._acquire(keys=keys, args=[max(1, int(ttl_s * 1000)), random_part, fence_ttl])
        )
        return Lease(session_id, value.decode()) if value else None

    async def renew(self, lease: Lease, ttl_s: float) -> bool:
        keys = [self._session(lease.session_id, "lock")]
        done = await self._call(lambda: self._renew(keys=keys, args=[lease.value, max(1, int(ttl_s * 1000))]))
        return bool(done)

    async def release(self, lease: Lease) -> None:
        keys = [self._session(lease.session_id, "lock")]
        await self._call(lambda: self._release(keys=keys, args=[lease.value]))

    async def commit_turn(self, lease: Lease, record: SessionRecord, new_blobs: dict[bytes, bytes]) -> None:
        sid = lease.session_id
        keys = [self._session(sid, "lock"), self._session(sid), self._session(sid, "blobs")]
        args: list[Any] = [lease.value, record.dumps(), self._ttl_ms]
        for blob_id, data in new_blobs.items():
            args += [blob_id.hex(), data]
        outcome = await self._call(lambda: self._commit(keys=keys, args=args))
        if outcome == 0:
            raise lease_lost(sid)
        if outcome == -1:
            raise deleted_meanwhile(sid)

    # -- tokens -----------------------------------------------------------------------------------
    async def get_token(self, key_hash: str) -> AccessToken | None:
        raw = await self._call(lambda: self._redis.get(self._token(key_hash)))
        if raw is None:
            return None
        data = json.loads(raw)
        register_secret(data["value"])
        token = AccessToken(data["value"], float(data["issued_at"]), float(data["expires_at"]))
        return token if token.expires_at > time.time() else None

    async def put_token(self, key_hash: str, token: AccessToken) -> None:
        left_ms = int((token.expires_at - time.time()) * 1000)
        if left_ms <= 0:
            return
        body = json.dumps(
            {"value": token.value, "issued_at": token.issued_at, "expires_at": token.expires_at}
        )

        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._token(key_hash), body, px=left_ms)
                pipe.delete(self._token(key_hash) + ":claim")  # the exchange is over
                await pipe.execute()

        await self._call(go)

    async def claim_exchange(self, key_hash: str, ttl_s: float) -> bool:
        key = self._token(key_hash) + ":claim"
        return bool(
            await self._call(lambda: self._redis.set(key, b"1", nx=True, px=max(1, int(ttl_s * 1000))))
        )

    async def drop_token(self, key_hash: str, value: str) -> None:
        keys = [self._token(key_hash)]
        await self._call(lambda: self._drop_token(keys=keys, args=[value]))

    # -- lifecycle --------------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._call(lambda: self._redis.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()
