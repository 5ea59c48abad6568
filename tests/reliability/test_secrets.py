"""Secrets never leak: a run with a distinctive API key through every path that logs, raises,
records or spawns, then a grep of logs, exception messages, error bodies, cassettes and the process
list for the key and for access tokens finds nothing."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from pathlib import Path

import httpx
import pytest
import yaml
from cursorpipe import CursorClient, CursorPipeConfig, CursorPipeError
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, Fault
from cursorpipe.testing.emulator._server import DEFAULT_API_KEY
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
        # An explicit dialect: the outdated-client fault must surface as an error (no dialect switch).
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=key, max_retries=0, connect_dialect="cli"
        )
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


def cassette_problems(text: str) -> list[str]:
    """Every credential-shaped thing in a cassette's text (empty when it is clean). Each check is
    on its own (issue 12: the old ``A not in t or B not in t`` passed when either half held)."""
    problems = []
    if "crsr_" in text:
        problems.append("a Cursor API key (crsr_...)")
    if DEFAULT_API_KEY[len("crsr_") :] in text:
        problems.append("the emulator's API key without its prefix")
    if TOKEN_PREFIX in text or re.search(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.", text):
        problems.append("an access token (JWT)")
    for interaction in yaml.safe_load(text).get("interactions", []):
        headers = {k.lower(): v for k, v in interaction["request"].get("headers", {}).items()}
        for value in headers.get("authorization", []):
            if value != "[SCRUBBED]":
                problems.append(f"an unscrubbed authorization header: {value[:12]}...")
    return problems


def test_cassettes_hold_no_credentials() -> None:
    files = sorted(CASSETTES.glob("*.yaml"))
    assert files, "no cassettes found"
    for path in files:
        text = path.read_text("utf-8")
        assert "[SCRUBBED]" in text, path  # authorization was there and was scrubbed
        assert cassette_problems(text) == [], path


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("crsr_" + "ab12" * 8, "a Cursor API key"),
        (DEFAULT_API_KEY, "a Cursor API key"),
        (DEFAULT_API_KEY[len("crsr_") :], "without its prefix"),
        (TOKEN_PREFIX + ".eyJzdWIiOiJ1c2VyIn0.c2ln", "JWT"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", "JWT"),
    ],
)
def test_the_cassette_check_catches_each_kind_of_leak(planted: str, expected: str) -> None:
    clean = (CASSETTES / "list_models.yaml").read_text("utf-8")
    assert cassette_problems(clean) == []
    leaked = clean.replace("x-ghost-mode:", f"x-leak:\n      - '{planted}'\n      x-ghost-mode:", 1)
    assert any(expected in p for p in cassette_problems(leaked)), cassette_problems(leaked)
    bearer = clean.replace("'[SCRUBBED]'", "Bearer abc.def.ghi", 1)
    assert any("unscrubbed authorization" in p for p in cassette_problems(bearer))
