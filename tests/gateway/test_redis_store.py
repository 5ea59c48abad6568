"""What only the Redis store has: several clients (as several replicas) and an unreachable server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cursorpipe.server._gateway._redis import RedisStore
from cursorpipe.server._gateway._store import SessionRecord, StateUnavailableError

from ._redis_server import RedisServer, free_port


async def test_leases_exclusive_across_clients(redis_server: RedisServer, prefix: str) -> None:
    replicas = [RedisStore(redis_server.url, ttl_s=60, prefix=prefix) for _ in range(3)]
    try:
        await replicas[0].create(SessionRecord(id="s", owner="o", model="m"))
        inside = 0
        most = 0
        order: list[int] = []

        async def turn(store: RedisStore) -> None:
            nonlocal inside, most
            lease = await store.acquire("s", ttl_s=5, wait_s=10)
            inside += 1
            most = max(most, inside)
            order.append(lease.fence)
            await asyncio.sleep(0.02)
            inside -= 1
            await store.release(lease)

        await asyncio.gather(*(turn(replicas[i % 3]) for i in range(12)))
        assert most == 1, "two turns of one session ran at once"
        assert sorted(order) == order and len(set(order)) == 12
    finally:
        for r in replicas:
            await r.aclose()


async def test_unreachable_redis_is_a_retryable_503_kind_of_error(tmp_path: Path) -> None:
    store = RedisStore(f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0", ttl_s=60, timeout_s=0.5)
    try:
        with pytest.raises(StateUnavailableError) as info:
            await store.get("s")
        err = info.value
        assert err.retryable and err.retry_after and err.code == "state_unavailable"
        assert "s3cret-pass" not in str(err) and "127.0.0.1" in str(err)
        with pytest.raises(StateUnavailableError):
            await store.ping()
    finally:
        await store.aclose()


async def test_store_comes_back_after_a_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r")
    server.start()
    store = RedisStore(server.url, ttl_s=60, timeout_s=0.5)
    try:
        await store.ping()
        server.stop()
        with pytest.raises(StateUnavailableError):
            await store.ping()
        server.start()
        await store.ping()
        assert await store.create(SessionRecord(id="again", owner="o", model="m"))
    finally:
        await store.aclose()
        server.stop()


async def test_keys_hold_hashes_never_api_keys(redis_server: RedisServer, prefix: str) -> None:
    from cursorpipe.auth import AccessToken
    from cursorpipe.server._gateway._keys import key_hash

    api_key = "crsr_very_secret_key_123"
    owner = key_hash(api_key)
    store = RedisStore(redis_server.url, ttl_s=60, prefix=prefix)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.create(SessionRecord(id="s", owner=owner, model="m"))
        await store.put_token(owner, AccessToken("tok", 0, 4102444800))
        keys = [k.decode() for k in await raw.keys(prefix + "*")]
        assert keys and all(api_key not in k for k in keys)
        assert any(owner in k for k in keys)
        for k in keys:
            kind = await raw.type(k)
            if kind == b"string":
                assert api_key.encode() not in await raw.get(k)
    finally:
        await store.aclose()
        await raw.aclose()
