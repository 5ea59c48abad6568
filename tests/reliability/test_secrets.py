"""Secrets never leak: a run with a distinctive API key through every path that logs, raises,
records or spawns, then a grep of logs, exception messages, error bodies, cassettes and the process
list for the key and for access tokens finds nothing."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from pathlib import Path

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig, CursorPipeError
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, Fault
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_CRASH_AFTER, ENV_FIRST_DELAY, ENV_STATE_DIR

from ._probes import cmdlines

CASSETTES = Path(__file__).resolve().parents[1] / "connect" / "cassettes"
# Every access token the emulator issues starts with this JWT header segment.
TOKEN_PREFIX = base64.urlsafe_b64encode(b'{"alg": "HS256", "typ": "JWT"}').decode().rstrip("=")


def _messages(exc: BaseException) -> str:
    """str() and repr() of an exception and everything it chains to, plus its attributes."""
    out = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out += [str(cur), repr(cur), repr(getattr(cur, "details", "")), str(getattr(cur, "stderr", ""))]
        cur = cur.__cause__ or cur.__context__
    return "\n".join(out)


def _assert_clean(haystack: str, key: str) -> None:
    assert key not in haystack
    assert key[5:] not in haystack  # not even without the crsr_ prefix
    assert TOKEN_PREFIX not in haystack


async def test_connect_and_server_paths_leak_nothing(caplog: pytest.LogCaptureFixture) -> None:
    key = "crsr_" + secrets.token_hex(24)
    collected: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with Emulator(api_key=key) as emu:
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=key, max_retries=0)
        async with CursorClient(config) as client:
            await client.generate("auto", "hello")
            async with client.session("auto") as session:
                await session.prompt("one")
                await session.prompt("two")
            for fault in (Fault.UNAUTHENTICATED, Fault.USAGE_LIMIT, Fault.RATE_LIMIT, Fault.OUTDATED_CLIENT):
                # unauthenticated is re-exchanged and retried once by the transport
                emu.inject(fault, times=2 if fault is Fault.UNAUTHENTICATED else 1)
                with pytest.raises(CursorPipeError) as info:
                    await client.generate("auto", "fails")
                collected.append(_messages(info.value))
                assert emu.pending_faults == []
            with pytest.raises(CursorPipeError) as info:
                await client.generate("no-such-model", "x")
            collected.append(_messages(info.value))
            # The server's error bodies and headers.
            app = create_app(config, client=client)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                    emu.inject(Fault.UNAUTHENTICATED, times=2)
                    r = await http.post(
                        "/v1/chat/completions",
                        json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
                    )
                    assert r.status_code == 401, r.text
                    collected += [r.text, str(r.headers)]
        # A wrong key at the exchange.
        bad = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key="crsr_" + secrets.token_hex(24)
        )
        async with CursorClient(bad) as client:
            with pytest.raises(CursorPipeError) as info:
                await client.generate("auto", "x")
            collected.append(_messages(info.value))
            _assert_clean(_messages(info.value), bad.api_key.get_secret_value())
    assert len(collected) >= 7
    _assert_clean("\n".join(collected) + caplog.text, key)


async def test_cli_transports_keep_the_key_off_argv_and_out_of_crash_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = "crsr_" + secrets.token_hex(24)
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "chats"))
    monkeypatch.setenv(ENV_FIRST_DELAY, "1.0")
    for strategy in ("subprocess", "acp"):
        config = CursorPipeConfig(strategy=strategy, agent_bin=executable(), api_key=key, max_retries=0)
        async with CursorClient(config) as client:
            task = asyncio.create_task(client.generate("auto", "slow answer"))
            seen = ""
            for _ in range(40):  # sample the process list while the agent runs
                await asyncio.sleep(0.05)
                seen += "\n".join(cmdlines())
            await task
            assert "cursorpipe-fake-agent" in seen or " agent" in seen or "fake_agent" in seen
            _assert_clean(seen, key)
    # The fake agent prints the key in its crash dump; the typed error must not carry it.
    monkeypatch.setenv(ENV_FIRST_DELAY, "0")
    monkeypatch.setenv(ENV_CRASH_AFTER, "1")
    config = CursorPipeConfig(strategy="subprocess", agent_bin=executable(), api_key=key, max_retries=0)
    async with CursorClient(config) as client:
        with pytest.raises(CursorPipeError) as info:
            await client.generate("auto", "crash please")
    assert info.value.code == "agent_crashed"
    _assert_clean(_messages(info.value), key)


def test_cassettes_hold_no_credentials() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert files, "no cassettes found"
    for path in files:
        text = path.read_text("utf-8")
        assert "[SCRUBBED]" in text  # authorization was there and was scrubbed
        assert TOKEN_PREFIX not in text, path
        assert "crsr_" not in text or "crsr_emulator_test_key" not in text, path
        for line in text.splitlines():
            low = line.lower()
            assert not low.strip().startswith("- bearer"), (path, line)
