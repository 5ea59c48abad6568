"""Sessions on the store, driven like replicas do: a session created on one replica continues on
the others with its memory intact, turns are serialised, owners are enforced, a failed or dead
turn commits nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.errors import CursorPipeError
from cursorpipe.server._errors import APIError
from cursorpipe.server._gateway._callers import CallerClients, caller_from_headers
from cursorpipe.server._gateway._redis import RedisStore
from cursorpipe.server._gateway._sessions import SharedSessions, gateway_error, session_turn
from cursorpipe.server._gateway._store import LeaseLostError, SessionBusyError, StateUnavailableError
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply
from cursorpipe.types import TextDelta, TurnEnd

from ._redis_server import RedisServer

ALICE, BOB = "crsr_alice_secret_1", "crsr_bob_secret_2"
ACCOUNTS = {ALICE: "alice", BOB: "bob"}


def who(key: str):
    return caller_from_headers({"x-api-key": key}, passthrough=True, allowed=None)


def ask(text: str):
    return session_turn(text)


async def say(replica: SharedSessions, key: str, sid: str, text: str) -> str:
    out = []
    ended = False
    async with aclosing(replica.turn(who(key), sid, ask(text))) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                out.append(event.text)
            ended = ended or isinstance(event, TurnEnd)
    assert ended
    return "".join(out)


@asynccontextmanager
async def replicas(
    emu: Emulator, redis_url: str, prefix: str, n: int = 3, lock_ttl_s: float = 5
) -> AsyncIterator[list[SharedSessions]]:
    out = []
    for _ in range(n):
        store = RedisStore(redis_url, ttl_s=60, prefix=prefix)
        clients = CallerClients(CursorPipeConfig(backend_url=emu.url, max_retries=0), store)
        out.append(SharedSessions(store, clients, lock_ttl_s=lock_ttl_s, lock_wait_s=10))
    try:
        yield out
    finally:
        for r in out:
            assert isinstance(r.clients, CallerClients)
            await r.clients.aclose()
            await r.store.aclose()


async def test_session_continues_on_every_replica(redis_server: RedisServer, prefix: str) -> None:
    async with Emulator(accounts=ACCOUNTS) as emu, replicas(emu, redis_server.url, prefix) as (a, b, c):
        record = await a.create(who(ALICE), "auto", "conv-1")
        assert record.owner != "" and ALICE not in record.dumps()
        assert await say(a, ALICE, "conv-1", "one") == expected_reply("one")
        assert await say(b, ALICE, "conv-1", "two") == expected_reply("two", earlier=2, first="one", turns=1)
        assert await say(c, ALICE, "conv-1", "three") == expected_reply(
            "three", earlier=4, first="one", turns=2
        )
        assert (await b.get(who(ALICE), "conv-1")).turns == 3
        conversation_ids = {run.run_request.conversation_id for run in emu.runs if run.run_request}
        assert conversation_ids == {record.conversation["conversation_id"]}


async def test_other_callers_get_403_and_see_nothing(redis_server: RedisServer, prefix: str) -> None:
    async with Emulator(accounts=ACCOUNTS) as emu, replicas(emu, redis_server.url, prefix, n=2) as (a, b):
        await a.create(who(ALICE), "auto", "mine")
        await say(a, ALICE, "mine", "secret plan")
        for call in (
            b.get(who(BOB), "mine"),
            b.delete(who(BOB), "mine"),
            say(b, BOB, "mine", "let me in"),
            b.get_or_create(who(BOB), "mine", "auto"),
        ):
            with pytest.raises(APIError) as info:
                await call
            assert info.value.status == 403
        assert await b.list(who(BOB)) == []
        assert [r.id for r in await b.list(who(ALICE))] == ["mine"]
        with pytest.raises(APIError) as missing:
            await b.get(who(ALICE), "nope")
        assert missing.value.status == 404
        assert len(emu.runs) == 1


async def test_concurrent_turns_are_serialised(redis_server: RedisServer, prefix: str) -> None:
    async with (
        Emulator(Behaviour(chunks=4, token_delay_s=0.02), accounts=ACCOUNTS) as emu,
        replicas(emu, redis_server.url, prefix) as reps,
    ):
        await reps[0].create(who(ALICE), "auto", "busy")
        texts = [f"m{i}" for i in range(6)]
        answers = await asyncio.gather(*(say(reps[i % 3], ALICE, "busy", t) for i, t in enumerate(texts)))
        # Serialised: each turn saw every earlier one (earlier = 2 x its position in the order).
        seen = sorted(len(emu.runs[i].history) for i in range(6))
        assert seen == [0, 2, 4, 6, 8, 10]
        assert all(
            a.startswith(expected_reply(t)[: len("Emulated reply to: ")])
            for a, t in zip(answers, texts, strict=True)
        )
        assert (await reps[0].get(who(ALICE), "busy")).turns == 6


async def test_failed_turn_commits_nothing_and_next_turn_works(
    redis_server: RedisServer, prefix: str
) -> None:
    async with Emulator(accounts=ACCOUNTS) as emu, replicas(emu, redis_server.url, prefix, n=2) as (a, b):
        await a.create(who(ALICE), "auto", "s")
        await say(a, ALICE, "s", "one")
        emu.inject(Fault.RATE_LIMIT)
        with pytest.raises(CursorPipeError):
            await say(a, ALICE, "s", "lost")
        assert (await b.get(who(ALICE), "s")).turns == 1
        assert await say(b, ALICE, "s", "two") == expected_reply("two", earlier=2, first="one", turns=1)


async def test_dead_replica_lease_expires_and_its_turn_is_not_kept(
    redis_server: RedisServer, prefix: str
) -> None:
    async with (
        Emulator(Behaviour(chunks=20, token_delay_s=0.08), accounts=ACCOUNTS) as emu,
        replicas(emu, redis_server.url, prefix, n=2, lock_ttl_s=1.0) as (a, b),
    ):
        await a.create(who(ALICE), "auto", "s")
        await say(a, ALICE, "s", "one")

        # Replica A freezes mid-turn: its renewals never arrive, nothing releases the lease.
        async def frozen(lease: object, ttl_s: float) -> bool:
            return True

        a.store.renew = frozen  # type: ignore[method-assign]
        stuck = a.turn(who(ALICE), "s", ask("dying"))
        first = await stuck.__anext__()
        assert first is not None
        with pytest.raises(SessionBusyError):
            await b.store.acquire("s", 1.0, wait_s=0)
        # B gets the session once the lease has expired, from the last committed turn.
        b.lock_wait_s = 5
        assert await say(b, ALICE, "s", "two") == expected_reply("two", earlier=2, first="one", turns=1)
        # A wakes up and finishes: its commit is refused by the fencing check.
        with pytest.raises(LeaseLostError):
            async for _ in stuck:
                pass
        assert (await b.get(who(ALICE), "s")).turns == 2
        # A recovers: a turn longer than the lease's lifetime is kept alive by its renewals.
        del a.store.renew
        assert await say(a, ALICE, "s", "three") == expected_reply("three", earlier=4, first="one", turns=2)


async def test_store_down_is_a_clear_503(redis_server: RedisServer, prefix: str) -> None:
    from ._redis_server import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60, timeout_s=0.3)
    async with Emulator(accounts=ACCOUNTS) as emu:
        clients = CallerClients(CursorPipeConfig(backend_url=emu.url), store)
        sessions = SharedSessions(store, clients, lock_ttl_s=5, lock_wait_s=1)
        try:
            with pytest.raises(StateUnavailableError) as info:
                await sessions.create(who(ALICE), "auto", "s")
            err = gateway_error(info.value)
            assert err is not None and err.status == 503 and err.retry_after
        finally:
            await clients.aclose()
            await store.aclose()
