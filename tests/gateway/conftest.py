"""Fixtures of the gateway tests: a real Redis server for the session (see _redis_server.py), a
fresh key prefix per test so tests never see each other's keys, and the store under test in both
implementations."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cursorpipe.server._gateway._redis import RedisStore
from cursorpipe.server._gateway._store import MemoryStore, StateStore

from ._redis_server import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer, prefix: str
) -> AsyncIterator[StateStore]:
    impl: StateStore
    if request.param == "memory":
        impl = MemoryStore(ttl_s=60)
    else:
        impl = RedisStore(redis_server.url, ttl_s=60, prefix=prefix)
    try:
        yield impl
    finally:
        await impl.aclose()
