"""Passthrough callers: identified by their key's hash, each on their own Cursor account, tokens
shared between replicas through the store, and the key never shown."""

from __future__ import annotations

import asyncio

import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.auth import jwt_claims
from cursorpipe.errors import ConfigurationError
from cursorpipe.server._errors import APIError
from cursorpipe.server._gateway._callers import CallerClients, caller_from_headers
from cursorpipe.server._gateway._keys import key_hash, parse_allow_list
from cursorpipe.server._gateway._redis import RedisStore
from cursorpipe.server._gateway._store import MemoryStore
from cursorpipe.testing.emulator import Emulator, expected_reply

from ._redis_server import RedisServer, free_port

ALICE, BOB = "crsr_alice_secret_1", "crsr_bob_secret_2"
ACCOUNTS = {ALICE: "alice", BOB: "bob"}


def test_token_mode_has_one_shared_caller() -> None:
    caller = caller_from_headers({"authorization": "Bearer anything"}, passthrough=False, allowed=None)
    assert caller.hash == "" and caller.key == "" and caller.label == "shared"


def test_passthrough_identifies_by_hash_and_never_echoes_the_key() -> None:
    caller = caller_from_headers({"authorization": f"Bearer {ALICE}"}, passthrough=True, allowed=None)
    assert caller.hash == key_hash(ALICE) and len(caller.hash) == 64
    assert ALICE not in repr(caller) and caller.label == caller.hash[:12]
    via_header = caller_from_headers({"x-api-key": BOB}, passthrough=True, allowed=None)
    assert via_header.hash == key_hash(BOB)
    with pytest.raises(APIError) as missing:
        caller_from_headers({}, passthrough=True, allowed=None)
    assert missing.value.status == 401
    allowed = parse_allow_list(key_hash(ALICE))
    assert caller_from_headers({"x-api-key": ALICE}, passthrough=True, allowed=allowed).hash == key_hash(
        ALICE
    )
    with pytest.raises(APIError) as refused:
        caller_from_headers({"authorization": f"Bearer {BOB}"}, passthrough=True, allowed=allowed)
    assert refused.value.status == 403 and BOB not in refused.value.message
    assert key_hash(BOB)[:12] in refused.value.message


def test_allow_list_takes_hashes_not_keys() -> None:
    assert parse_allow_list(CursorPipeConfig(allowed_key_hashes="  ").allowed_key_hashes) is None
    config = CursorPipeConfig(allowed_key_hashes=f"{key_hash(ALICE)}, {key_hash(BOB).upper()}")
    assert parse_allow_list(config.allowed_key_hashes) == {key_hash(ALICE), key_hash(BOB)}
    with pytest.raises(ConfigurationError) as info:
        CursorPipeConfig(allowed_key_hashes=ALICE)
    assert ALICE not in str(info.value) and "CURSORPIPE_ALLOWED_KEY_HASHES" in str(info.value)


def test_state_url_is_a_secret_redis_url() -> None:
    config = CursorPipeConfig(state_url="redis://:hunter2@cache:6379/0")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.state_url)
    with pytest.raises(ConfigurationError):
        CursorPipeConfig(state_url="http://cache:6379")
    assert CursorPipeConfig(max_concurrency=32).per_key_limit == 8
    assert CursorPipeConfig(max_concurrency=2).per_key_limit == 1
    assert CursorPipeConfig(per_key_concurrency=3).per_key_limit == 3


def test_passthrough_needs_the_connect_transport() -> None:
    with pytest.raises(ConfigurationError):
        CallerClients(CursorPipeConfig(strategy="acp"), None)


async def _ask(clients: CallerClients, key: str, text: str) -> str:
    caller = caller_from_headers({"x-api-key": key}, passthrough=True, allowed=None)
    client = await clients.acquire(caller)
    try:
        return await client.generate("auto", text)
    finally:
        clients.release(caller)


def _accounts_of_runs(emu: Emulator) -> list[str | None]:
    return [emu.account_of(run.headers["authorization"].split(" ", 1)[1]) for run in emu.runs]


async def test_each_caller_runs_on_their_own_account() -> None:
    async with Emulator(accounts=ACCOUNTS) as emu:
        clients = CallerClients(CursorPipeConfig(backend_url=emu.url, api_key="crsr_server_own"), None)
        try:
            assert await _ask(clients, ALICE, "hello") == expected_reply("hello")
            assert await _ask(clients, BOB, "hi") == expected_reply("hi")
            assert await _ask(clients, ALICE, "again") == expected_reply("again")
        finally:
            await clients.aclose()
        assert _accounts_of_runs(emu) == ["alice", "bob", "alice"]
        assert len(clients) == 0


async def test_replicas_share_exchanged_tokens(redis_server: RedisServer, prefix: str) -> None:
    async with Emulator(accounts=ACCOUNTS) as emu:
        stores = [RedisStore(redis_server.url, ttl_s=60, prefix=prefix) for _ in range(3)]
        replicas = [CallerClients(CursorPipeConfig(backend_url=emu.url), s) for s in stores]
        try:
            for replica in replicas:
                await _ask(replica, ALICE, "one")
            assert emu.tokens_issued == 1, "three replicas, one key: one exchange"
            await _ask(replicas[2], BOB, "two")
            assert emu.tokens_issued == 2
            cached = await stores[0].get_token(key_hash(ALICE))
            assert cached is not None and jwt_claims(cached.value)["sub"] == "emulator|alice"
            # Cursor refuses the token on one replica: it is dropped for everyone.
            client = await replicas[0].acquire(
                caller_from_headers({"x-api-key": ALICE}, passthrough=True, allowed=None)
            )
            transport = await client.transport()
            await transport.auth.invalidate(cached.value)  # type: ignore[attr-defined]
            assert await stores[1].get_token(key_hash(ALICE)) is None
        finally:
            for replica, store in zip(replicas, stores, strict=True):
                await replica.aclose()
                await store.aclose()


async def test_replicas_meeting_a_key_at_once_exchange_it_once(
    redis_server: RedisServer, prefix: str
) -> None:
    async with Emulator(accounts=ACCOUNTS) as emu:
        stores = [RedisStore(redis_server.url, ttl_s=60, prefix=prefix) for _ in range(3)]
        replicas = [CallerClients(CursorPipeConfig(backend_url=emu.url), s) for s in stores]
        try:
            answers = await asyncio.gather(*(_ask(r, BOB, f"at once {i}") for i, r in enumerate(replicas)))
            assert answers == [expected_reply(f"at once {i}") for i in range(3)]
            assert emu.tokens_issued == 1, "the other replicas waited for the first one's token"
        finally:
            for replica, store in zip(replicas, stores, strict=True):
                await replica.aclose()
                await store.aclose()


async def test_unreachable_store_costs_only_an_exchange() -> None:
    async with Emulator(accounts=ACCOUNTS) as emu:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60, timeout_s=0.3)
        clients = CallerClients(CursorPipeConfig(backend_url=emu.url), store)
        try:
            assert await _ask(clients, ALICE, "still works") == expected_reply("still works")
            assert emu.tokens_issued == 1
        finally:
            await clients.aclose()
            await store.aclose()


async def test_least_recently_used_idle_client_is_closed() -> None:
    async with Emulator(accounts=ACCOUNTS) as emu:
        clients = CallerClients(CursorPipeConfig(backend_url=emu.url), MemoryStore(60), max_clients=1)
        try:
            alice = caller_from_headers({"x-api-key": ALICE}, passthrough=True, allowed=None)
            bob = caller_from_headers({"x-api-key": BOB}, passthrough=True, allowed=None)
            first = await clients.acquire(alice)
            second = await clients.acquire(bob)  # alice's is busy: kept
            assert len(clients) == 2 and not first.closed
            clients.release(alice)
            clients.release(bob)
            carol = caller_from_headers({"x-api-key": "crsr_carol"}, passthrough=True, allowed=None)
            third = await clients.acquire(carol)
            assert len(clients) == 1 and first.closed and second.closed and not third.closed
        finally:
            await clients.aclose()
