"""The gateway inside the server app (in-process, over ASGI): passthrough identification, the
allow list, per-caller models and sessions, health without server credentials, errors in
OpenAI's shape, and the single-process default left alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from cursorpipe.server._gateway._keys import key_hash, key_label
from cursorpipe.testing.emulator import Emulator, expected_reply
from fastapi import FastAPI

from ._redis_server import RedisServer, free_port

ALICE, BOB = "crsr_alice_wiring_key", "crsr_bob_wiring_key"
ACCOUNTS = {ALICE: "alice", BOB: "bob"}


@contextlib.asynccontextmanager
async def served(app: FastAPI, base_url: str = "http://gateway.example") -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


def as_(key: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


def chat_body(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(accounts=ACCOUNTS) as e:
        yield e


def test_single_process_default_has_no_gateway() -> None:
    app = create_app(client=CursorClient(CursorPipeConfig(), transport=MockTransport()))
    assert app.state.cursorpipe.gateway is None


async def test_passthrough_identifies_every_caller(emu: Emulator) -> None:
    allowed = ",".join(key_hash(k) for k in (ALICE, BOB))
    config = CursorPipeConfig(
        auth_mode="passthrough", backend_url=emu.url, allowed_key_hashes=allowed, queue_timeout_s=0.2
    )
    async with served(create_app(config)) as http:
        assert (await http.get("/health/ready")).status_code == 200, "no server credentials needed"
        missing = await http.post("/v1/chat/completions", json=chat_body("hi"))
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        stranger = await http.post("/v1/chat/completions", json=chat_body("hi"), headers=as_("crsr_mallory"))
        assert stranger.status_code == 403 and "crsr_mallory" not in stranger.text
        ok = await http.post("/v1/chat/completions", json=chat_body("hi"), headers=as_(ALICE))
        assert ok.json()["choices"][0]["message"]["content"] == expected_reply("hi")
        via_header = await http.post("/v1/chat/completions", json=chat_body("yo"), headers={"x-api-key": BOB})
        assert via_header.status_code == 200
        models = await http.get("/v1/models", headers=as_(BOB))
        assert models.status_code == 200 and models.json()["data"]
        metrics = (await http.get("/metrics", headers=as_(ALICE))).text
        assert f'cursorpipe_caller_requests_total{{key="{key_label(key_hash(ALICE))}"}}' in metrics
        assert ALICE not in metrics and BOB not in metrics
    accounts = [emu.account_of(r.headers["authorization"].split(" ", 1)[1]) for r in emu.runs]
    assert accounts == ["alice", "bob"]


async def test_a_refused_key_does_not_degrade_the_server(emu: Emulator) -> None:
    config = CursorPipeConfig(auth_mode="passthrough", backend_url=emu.url, max_retries=0)
    async with served(create_app(config)) as http:
        bad = await http.post(
            "/v1/chat/completions", json=chat_body("hi"), headers=as_("crsr_not_an_account")
        )
        assert bad.status_code == 401 and "crsr_not_an_account" not in bad.text
        health = (await http.get("/health")).json()
        assert health["status"] == "ok" and health["degraded"] is None
        assert (await http.get("/health/ready")).status_code == 200


async def test_session_routes_are_per_caller(emu: Emulator) -> None:
    config = CursorPipeConfig(auth_mode="passthrough", backend_url=emu.url)
    async with served(create_app(config)) as http:
        created = await http.post("/v1/sessions", json={"model": "auto", "id": "alice-1"}, headers=as_(ALICE))
        assert created.status_code == 201 and created.json()["id"] == "alice-1"
        turn = await http.post(
            "/v1/chat/completions",
            json=chat_body("one"),
            headers=as_(ALICE, **{"x-cursor-session-id": "alice-1"}),
        )
        assert turn.json()["choices"][0]["message"]["content"] == expected_reply("one")
        assert turn.headers["x-cursor-session-id"] == "alice-1"
        second = await http.post(
            "/v1/chat/completions",
            json=chat_body("two"),
            headers=as_(ALICE, **{"x-cursor-session-id": "alice-1"}),
        )
        assert second.json()["choices"][0]["message"]["content"] == expected_reply(
            "two", earlier=2, first="one", turns=1
        )
        assert (await http.get("/v1/sessions/alice-1", headers=as_(ALICE))).json()["turns"] == 2
        assert (await http.get("/v1/sessions/alice-1", headers=as_(BOB))).status_code == 403
        assert (await http.get("/v1/sessions", headers=as_(BOB))).json()["data"] == []
        assert (await http.delete("/v1/sessions/alice-1", headers=as_(BOB))).status_code == 403
        taken = await http.post("/v1/sessions", json={"id": "alice-1"}, headers=as_(BOB))
        assert taken.status_code == 409
        gone = await http.delete("/v1/sessions/alice-1", headers=as_(ALICE))
        assert gone.json()["deleted"] is True
        assert (await http.get("/v1/sessions/alice-1", headers=as_(ALICE))).status_code == 404


async def test_token_mode_shares_sessions_through_redis(
    emu: Emulator, redis_server: RedisServer, prefix: str
) -> None:
    def app() -> FastAPI:
        config = CursorPipeConfig(
            backend_url=emu.url,
            api_key=emu.api_key,
            strategy="connect",
            bearer_token="team-token-0123456789",
            state_url=redis_server.url,
            state_prefix=prefix,
            pool_size=0,
        )
        return create_app(config)

    headers = {"authorization": "Bearer team-token-0123456789", "x-cursor-session-id": "team-1"}
    async with served(app()) as a, served(app()) as b:
        assert (await a.post("/v1/chat/completions", json=chat_body("one"))).status_code == 401
        first = await a.post("/v1/chat/completions", json=chat_body("one"), headers=headers)
        assert first.json()["choices"][0]["message"]["content"] == expected_reply("one")
        second = await b.post("/v1/chat/completions", json=chat_body("two"), headers=headers)
        assert second.json()["choices"][0]["message"]["content"] == expected_reply(
            "two", earlier=2, first="one", turns=1
        )


async def test_store_down_stateless_ok_sessions_503(emu: Emulator) -> None:
    config = CursorPipeConfig(
        backend_url=emu.url,
        api_key=emu.api_key,
        strategy="connect",
        state_url=f"redis://:pw-never-shown@127.0.0.1:{free_port()}/0",
        pool_size=0,
    )
    # No bearer token: only loopback Host names are served (the server's own rule).
    async with served(create_app(config), "http://127.0.0.1") as http:
        ok = await http.post("/v1/chat/completions", json=chat_body("still here"))
        assert ok.json()["choices"][0]["message"]["content"] == expected_reply("still here")
        down = await http.post(
            "/v1/chat/completions", json=chat_body("remember"), headers={"x-cursor-session-id": "s1"}
        )
        assert down.status_code == 503 and down.json()["error"]["code"] == "state_unavailable"
        assert float(down.headers["retry-after"]) > 0 and "pw-never-shown" not in down.text
        listing = await http.get("/v1/sessions")
        assert listing.status_code == 503
        health = (await http.get("/health")).json()
        assert health["status"] == "ok" and (await http.get("/health/ready")).status_code == 200
        assert health["gateway"]["shared_state"] is True and health["gateway"]["state_problem"]
        assert "pw-never-shown" not in str(health)


async def test_one_callers_burst_leaves_room_for_others(emu: Emulator) -> None:
    emu.behaviour.token_delay_s = 0.1
    config = CursorPipeConfig(
        auth_mode="passthrough",
        backend_url=emu.url,
        max_concurrency=4,
        per_key_concurrency=2,
        queue_timeout_s=0.3,
    )
    async with served(create_app(config)) as http:
        burst = [
            asyncio.create_task(
                http.post("/v1/chat/completions", json=chat_body(f"a{i}"), headers=as_(ALICE))
            )
            for i in range(6)
        ]
        await asyncio.sleep(0.05)
        bob = await http.post("/v1/chat/completions", json=chat_body("b"), headers=as_(BOB))
        assert bob.status_code == 200, "the burst of one key must not take every slot"
        answers = await asyncio.gather(*burst)
        codes = sorted(r.status_code for r in answers)
        assert codes.count(200) >= 2 and 429 in codes
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"]["code"] == "key_busy" and refused.headers["retry-after"]


async def test_passthrough_on_the_messages_route(emu: Emulator) -> None:
    """Anthropic clients send their key as ``x-api-key``: in passthrough it is the caller's own
    Cursor key on /v1/messages too, and refusals keep Anthropic's error shape."""
    config = CursorPipeConfig(auth_mode="passthrough", backend_url=emu.url, queue_timeout_s=0.2)
    body = {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
    async with served(create_app(config)) as http:
        missing = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert missing.status_code == 401
        assert missing.json()["type"] == "error"
        assert missing.json()["error"]["type"] == "authentication_error"
        ok = await http.post(
            "/v1/messages", json=body, headers={"x-api-key": BOB, "anthropic-version": "2023-06-01"}
        )
        assert ok.status_code == 200, ok.text
        texts = [b["text"] for b in ok.json()["content"] if b["type"] == "text"]
        assert texts == [expected_reply("hello")]
        assert BOB not in ok.text
    assert [emu.account_of(r.headers["authorization"].split(" ", 1)[1]) for r in emu.runs] == ["bob"]
