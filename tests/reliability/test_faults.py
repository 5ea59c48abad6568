"""Faults, one table: each injected failure gives the documented typed error (or a transparent
recovery), and the very next request on the same client succeeds. Connect faults run over both
wires against the emulator; process faults against the fake agent."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from cursorpipe import (
    AgentCrashError,
    AuthenticationError,
    CursorClient,
    CursorPipeConfig,
    CursorPipeError,
    RateLimitError,
    StreamStalledError,
    TextDelta,
    UsageLimitError,
)
from cursorpipe.testing.emulator import Emulator, Fault, expected_reply
from cursorpipe.testing.fake_agent import catalog, executable
from cursorpipe.testing.fake_agent.acp import HANG_MARKER
from cursorpipe.testing.fake_agent.catalog import ENV_CRASH_AFTER, ENV_HANG_AFTER
from cursorpipe.transports.connect import ConnectTransport

CONNECT_FAULTS: list[tuple[Fault, dict[str, float], type[CursorPipeError] | None]] = [
    (Fault.USAGE_LIMIT, {}, UsageLimitError),
    (Fault.RATE_LIMIT, {"retry_after": 120}, RateLimitError),
    (Fault.STALL, {}, StreamStalledError),
    (Fault.DROP_MID_STREAM, {}, None),  # resumed transparently from the checkpoint
    (Fault.UNAUTHENTICATED, {}, None),  # one forced re-exchange, then success
    (Fault.UNAVAILABLE, {}, None),  # retryable before output: the client retries
]


@pytest.fixture(scope="module")
def emu() -> object:
    with Emulator.start_in_thread() as emulator:
        yield emulator


@pytest.mark.parametrize("wire", ["never", "always"])
@pytest.mark.parametrize(
    ("fault", "params", "error"), CONNECT_FAULTS, ids=[f[0].value for f in CONNECT_FAULTS]
)
async def test_connect_fault_then_recovery(
    emu: Emulator, wire: str, fault: Fault, params: dict[str, float], error: type[CursorPipeError] | None
) -> None:
    config = CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=wire, max_retries=1
    )
    transport = ConnectTransport(config, stall_timeout_s=0.5)
    async with CursorClient(config, transport=transport) as client:
        emu.inject(fault, **params)
        if error is None:
            assert await client.generate("auto", "survive this") == expected_reply("survive this")
        else:
            with pytest.raises(error) as info:
                await client.generate("auto", "fail this")
            assert info.value.transport == "connect"
            if fault is Fault.RATE_LIMIT:
                assert info.value.retry_after == 120
        assert emu.pending_faults == []
        assert client.active_requests == 0
        assert await client.generate("auto", "next one") == expected_reply("next one")


async def test_rejected_api_key_is_remembered_not_hammered(emu: Emulator) -> None:
    """A key the exchange rejects stays rejected for this client (connect.md §2.3: a non-retryable
    exchange failure is remembered and re-raised), so a misconfigured server fails fast."""
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=1)
    async with CursorClient(config) as client:
        emu.inject(Fault.UNAUTHENTICATED_EXCHANGE)
        with pytest.raises(AuthenticationError, match="CURSOR_API_KEY"):
            await client.generate("auto", "x")
        exchanges = emu.paths().count("/auth/exchange_user_api_key")
        with pytest.raises(AuthenticationError):
            await client.generate("auto", "y")
        assert emu.paths().count("/auth/exchange_user_api_key") == exchanges
    # A fresh client (e.g. after fixing the key) works at once.
    async with CursorClient(config) as client:
        assert await client.generate("auto", "fixed") == expected_reply("fixed")


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("FAKE_AGENT_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(catalog.ENV_STATE_DIR, str(tmp_path / "chats"))


@pytest.mark.parametrize("strategy", ["acp", "subprocess"])
async def test_agent_sigkill_mid_stream_then_next_request(
    strategy: str, agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(catalog.ENV_LATENCY, "0.05")
    config = CursorPipeConfig(strategy=strategy, agent_bin=executable(), max_retries=0)
    async with CursorClient(config) as client:
        transport = await client.transport()
        killed: list[int] = []

        async def consume() -> None:
            async for event in client.events("auto", prompt="a long answer to be killed midway"):
                if isinstance(event, TextDelta) and not killed:
                    killed.extend(_agent_pids(transport))
                    for pid in killed:
                        os.kill(pid, signal.SIGKILL)

        with pytest.raises(AgentCrashError):
            await asyncio.wait_for(consume(), 30)
        assert killed, "no agent process was found to kill"
        assert client.active_requests == 0
        answer = await asyncio.wait_for(client.generate("auto", "after the kill"), 30)
        assert answer == catalog.expected_reply("after the kill")


def _agent_pids(transport: object) -> list[int]:
    """The running agent processes of a CLI transport (children of this process)."""
    from ._probes import children

    pid = getattr(transport, "pid", None)
    return [pid] if isinstance(pid, int) else children()


async def test_client_disconnect_mid_stream_cancels_upstream(emu: Emulator) -> None:
    config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key)
    emu.inject(Fault.TOKEN_DELAY, seconds=0.2)
    async with CursorClient(config) as client:
        stream = client.stream("auto", "one two three four five six seven eight")
        first = await anext(stream)
        assert first
        await stream.aclose()
        assert client.active_requests == 0
        await asyncio.sleep(0.2)
        run = emu.runs[-1]
        # Dropped at once like the SDK's run.cancel() (live-dialect.md row 11): no cancel_action.
        assert run.outcome == "disconnected", run.outcome
        assert await client.generate("auto", "still fine") == expected_reply("still fine")


async def test_repeated_agent_crashes_degrade_health_then_recover(
    agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 7: after the acp restart budget is spent, /health says degraded (with the
    reason) and readiness is 503 instead of "ok"; once the cool-down passes and the agent works,
    requests succeed and both are healthy again."""
    import httpx
    from cursorpipe.server import create_app

    monkeypatch.setenv(ENV_CRASH_AFTER, "0")
    config = CursorPipeConfig(strategy="acp", agent_bin=executable(), max_retries=0, acp_max_restarts=1)
    client = CursorClient(config)
    transport = await client.transport()
    transport.restart_cooldown_s = 1.0  # type: ignore[attr-defined]
    app = create_app(config, client=client)
    body = {"model": "auto", "messages": [{"role": "user", "content": "crash"}]}
    asgi = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=asgi, base_url="http://localhost", timeout=30) as http,
    ):
        codes = []
        for _ in range(4):
            r = await http.post("/v1/chat/completions", json=body)
            codes.append(r.json()["error"]["code"])
        assert codes[-1] == "agent_restarts_exhausted", codes
        health = (await http.get("/health")).json()
        assert health["status"] == "degraded", health
        assert "CURSORPIPE_ACP_MAX_RESTARTS" in health["degraded"]["reason"]
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["degraded"]["code"] == "agent_restarts_exhausted"

        monkeypatch.delenv(ENV_CRASH_AFTER)  # the agent is fixed
        await asyncio.sleep(1.1)  # the cool-down
        r = await http.post(
            "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "ok"}]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == catalog.expected_reply("ok")
        assert (await http.get("/health")).json()["status"] == "ok"
        assert (await http.get("/health/ready")).status_code == 200
    await client.close()


async def test_rejected_key_at_the_exchange_is_reported_by_health(emu: Emulator) -> None:
    """The exchange's 401 shows on /health and /health/ready with its reason (the client's
    recovery of a remembered exchange failure is the auth layer's)."""
    import httpx
    from cursorpipe.server import create_app

    config = CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0, pool_size=0
    )
    async with CursorClient(config) as client:
        app = create_app(config, client=client)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30
            ) as http,
        ):
            emu.inject(Fault.UNAUTHENTICATED_EXCHANGE)
            body = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 401
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "degraded" and ready.json()["degraded"]["reason"]


@pytest.mark.parametrize("strategy", ["acp", "subprocess"])
async def test_live_but_silent_agent_is_a_stall_not_a_held_slot(
    strategy: str, agent_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 8: an agent that stops making progress (alive, silent) fails the turn with
    StreamStalledError after the transport's stall timeout instead of holding it for the request
    deadline; the next request works."""
    # print mode: the process hangs after a chunk; acp: the prompt hangs until session/cancel
    # (the agent process itself stays healthy for the next prompt).
    prompt = "a long answer that hangs"
    if strategy == "subprocess":
        monkeypatch.setenv(ENV_HANG_AFTER, "1")
    else:
        prompt += " " + HANG_MARKER
    config = CursorPipeConfig(strategy=strategy, agent_bin=executable(), max_retries=0, request_timeout_s=300)
    async with CursorClient(config) as client:
        transport = await client.transport()
        transport.stall_timeout_s = 4.0  # type: ignore[attr-defined]  # > a cold start under load
        started = asyncio.get_running_loop().time()
        with pytest.raises(StreamStalledError):
            await asyncio.wait_for(client.generate("auto", prompt), 30)
        assert asyncio.get_running_loop().time() - started < 25
        assert client.active_requests == 0
        monkeypatch.delenv(ENV_HANG_AFTER, raising=False)
        assert await asyncio.wait_for(client.generate("auto", "fine now"), 30) == catalog.expected_reply(
            "fine now"
        )


def test_client_used_on_a_second_event_loop_fails_fast() -> None:
    """Issue 12 item 8: a client whose connections belong to a (closed) first loop used from a
    second one raises a clear SessionError at once instead of hanging 20-31 s in retries."""
    import time

    from cursorpipe import SessionError

    with Emulator.start_in_thread() as emulator:
        config = CursorPipeConfig(strategy="connect", backend_url=emulator.url, api_key=emulator.api_key)
        client = CursorClient(config)
        first = asyncio.new_event_loop()
        try:
            assert first.run_until_complete(client.generate("auto", "first loop")) == expected_reply(
                "first loop"
            )
            started = time.monotonic()
            with pytest.raises(SessionError) as info:
                asyncio.run(client.generate("auto", "second loop"))
            assert info.value.code == "client_loop_mismatch"
            assert "one client per event loop" in info.value.message
            assert time.monotonic() - started < 2
            # still fine on its own loop
            assert first.run_until_complete(client.generate("auto", "again")) == expected_reply("again")
        finally:
            first.run_until_complete(client.close())
            first.close()


TRUNCATING_AGENT = """#!{python}
import sys
args = sys.argv[1:]
if args and args[0] in ("--version", "-v", "about", "status", "models", "--list-models"):
    print("fake 1.0")
    sys.exit(0)
mode = {mode!r}
if mode == "acp" and "acp" in args:
    import json
    line = sys.stdin.readline()  # initialize
    req = json.loads(line)
    sys.stdout.write('{{"jsonrpc": "2.0", "id": ' + str(req["id"]) + ', "result": {{"protocolVersion"')
    sys.stdout.flush()
    sys.exit(0)
sys.stdout.write('not json at all\\n')
sys.stdout.write('{{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "hel')
sys.stdout.flush()
sys.exit(0)
"""


@pytest.mark.parametrize("strategy", ["subprocess", "acp"])
async def test_malformed_and_truncated_agent_output_is_a_typed_error(
    strategy: str, agent_env: None, tmp_path: Path
) -> None:
    """A CLI that prints garbage and a truncated frame, then exits: a typed CursorPipeError (never
    a bare exception or a hang), and the server answers it in OpenAI's shape."""
    import sys

    import httpx
    from cursorpipe.server import create_app

    agent = tmp_path / "truncating-agent"
    agent.write_text(TRUNCATING_AGENT.format(python=sys.executable, mode=strategy))
    agent.chmod(0o755)
    config = CursorPipeConfig(
        strategy=strategy, agent_bin=str(agent), max_retries=0, acp_startup_timeout_s=5, pool_size=0
    )
    async with CursorClient(config) as client:
        with pytest.raises(CursorPipeError) as info:
            await asyncio.wait_for(client.generate("auto", "x"), 20)
        assert info.value.code
        app = create_app(config, client=client)
        asgi = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=asgi, base_url="http://localhost", timeout=30) as http,
        ):
            r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert 500 < r.status_code < 600 and r.status_code != 500, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
