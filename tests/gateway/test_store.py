"""The state store's rules, against both implementations (in-process and a real Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest
from cursorpipe.auth import AccessToken
from cursorpipe.errors import SessionError
from cursorpipe.server._gateway._store import (
    LeaseLostError,
    MemoryStore,
    SessionBusyError,
    SessionRecord,
    StateStore,
)


def record(sid: str = "s1", owner: str = "a" * 64, turns: int = 0) -> SessionRecord:
    return SessionRecord(
        id=sid, owner=owner, model="m", dialect="cli", conversation={"turns": turns, "checkpoint": ""}
    )


async def test_create_get_load_list_delete(store: StateStore) -> None:
    assert await store.create(record("s1"))
    assert not await store.create(record("s1")), "a second create of the same id must be refused"
    assert await store.create(record("s2", owner="b" * 64))
    got = await store.get("s1")
    assert got is not None and got.owner == "a" * 64 and got.dialect == "cli"
    loaded = await store.load("s1")
    assert loaded is not None and loaded[1] == {}
    assert [r.id for r in await store.list("a" * 64)] == ["s1"]
    assert [r.id for r in await store.list("b" * 64)] == ["s2"]
    assert await store.delete("s1")
    assert not await store.delete("s1")
    assert await store.get("s1") is None and await store.load("s1") is None
    assert await store.list("a" * 64) == []


async def test_commit_writes_record_and_blobs_together(store: StateStore) -> None:
    await store.create(record())
    lease = await store.acquire("s1", ttl_s=5, wait_s=0)
    await store.commit_turn(lease, record(turns=1), {b"\x01\x02": b"one"})
    await store.commit_turn(lease, record(turns=2), {b"\x03": b"two"})
    loaded = await store.load("s1")
    assert loaded is not None
    rec, blobs = loaded
    assert rec.turns == 2
    assert blobs == {b"\x01\x02": b"one", b"\x03": b"two"}


async def test_one_lease_at_a_time_and_fences_grow(store: StateStore) -> None:
    await store.create(record())
    first = await store.acquire("s1", ttl_s=5, wait_s=0)
    assert await store.try_acquire("s1", ttl_s=5) is None
    with pytest.raises(SessionBusyError) as info:
        await store.acquire("s1", ttl_s=5, wait_s=0.1)
    assert info.value.retryable and info.value.code == "session_busy"
    await store.release(first)
    second = await store.acquire("s1", ttl_s=5, wait_s=0)
    assert second.fence > first.fence


async def test_waiter_gets_the_lease_when_released(store: StateStore) -> None:
    await store.create(record())
    first = await store.acquire("s1", ttl_s=5, wait_s=0)
    waiter = asyncio.create_task(store.acquire("s1", ttl_s=5, wait_s=5))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await store.release(first)
    second = await asyncio.wait_for(waiter, 5)
    assert second.fence > first.fence


async def test_dead_holder_lease_expires_and_its_late_commit_is_refused(store: StateStore) -> None:
    await store.create(record())
    stale = await store.acquire("s1", ttl_s=0.2, wait_s=0)
    # The holder "dies" (stops renewing): another replica gets the session after the expiry.
    fresh = await store.acquire("s1", ttl_s=5, wait_s=3)
    assert fresh.fence > stale.fence
    await store.commit_turn(fresh, record(turns=1), {b"\x0a": b"fresh"})
    with pytest.raises(LeaseLostError):
        await store.commit_turn(stale, record(turns=7), {b"\x0b": b"stale"})
    assert not await store.renew(stale, 5)
    await store.release(stale)  # must not release the fresh holder's lease
    assert await store.try_acquire("s1", ttl_s=5) is None
    loaded = await store.load("s1")
    assert loaded is not None
    assert loaded[0].turns == 1 and loaded[1] == {b"\x0a": b"fresh"}, "nothing of the stale turn was written"


async def test_expired_lease_without_successor_cannot_commit(store: StateStore) -> None:
    await store.create(record())
    lease = await store.acquire("s1", ttl_s=0.1, wait_s=0)
    await asyncio.sleep(0.3)
    with pytest.raises(LeaseLostError):
        await store.commit_turn(lease, record(turns=1), {})
    loaded = await store.load("s1")
    assert loaded is not None and loaded[0].turns == 0


async def test_renew_keeps_the_lease(store: StateStore) -> None:
    await store.create(record())
    lease = await store.acquire("s1", ttl_s=1.0, wait_s=0)
    for _ in range(4):  # 1.2 s in all: longer than the lease lives without renewals
        await asyncio.sleep(0.3)
        assert await store.renew(lease, 1.0)
    assert await store.try_acquire("s1", ttl_s=1) is None
    await store.commit_turn(lease, record(turns=1), {})


async def test_commit_to_a_deleted_session_is_refused(store: StateStore) -> None:
    await store.create(record())
    lease = await store.acquire("s1", ttl_s=5, wait_s=0)
    await store.delete("s1")
    with pytest.raises(SessionError):
        await store.commit_turn(lease, record(turns=1), {b"\x01": b"x"})
    assert await store.load("s1") is None


async def test_records_expire_after_ttl(store: StateStore) -> None:
    store.ttl_s = 1.0
    await store.create(record())
    assert await store.get("s1") is not None
    await asyncio.sleep(1.2)
    assert await store.sweep() == (1 if isinstance(store, MemoryStore) else 0)
    assert await store.get("s1") is None and await store.load("s1") is None
    assert await store.list("a" * 64) == []


async def test_token_cache_by_key_hash(store: StateStore) -> None:
    now = time.time()
    token = AccessToken("tok-123", now, now + 60)
    assert await store.get_token("h1") is None
    await store.put_token("h1", token)
    assert await store.get_token("h1") == token
    await store.drop_token("h1", "another")
    assert await store.get_token("h1") == token, "only the refused value is dropped"
    await store.drop_token("h1", "tok-123")
    assert await store.get_token("h1") is None
    await store.put_token("h2", AccessToken("old", now - 100, now - 1))
    assert await store.get_token("h2") is None


def test_damaged_record_is_a_typed_error() -> None:
    with pytest.raises(SessionError) as info:
        SessionRecord.loads(b"{not json")
    assert info.value.code == "session_state_invalid"
