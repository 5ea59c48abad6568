"""Browser-login refresh (live-dialect.md row 19, connect.md §2.5) and recovery from a remembered
auth failure (issue 12 item 7), against the emulator with an injected clock."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.auth import EXCHANGE_PATH, TokenProvider, refresh_at
from cursorpipe.errors import AuthenticationError, NetworkError
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply
from cursorpipe.transports.connect import ConnectTransport


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def login_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Cursor CLI config dir on Linux paths, with no key or token in the environment."""
    for name in ("CURSOR_API_KEY", "CURSORPIPE_API_KEY", "CURSOR_AUTH_TOKEN", "CURSORPIPE_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CURSOR_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    folder = tmp_path / "cursor"
    folder.mkdir()
    return folder


async def _login(emu: Emulator) -> dict[str, str]:
    """A token pair as a browser login leaves it (the emulator issues a real refresh token)."""
    async with httpx.AsyncClient() as http:
        r = await http.post(
            emu.url + EXCHANGE_PATH, content=b"{}", headers={"authorization": f"Bearer {emu.api_key}"}
        )
    body = r.json()
    assert body["refreshToken"] != body["accessToken"]
    return {"accessToken": body["accessToken"], "refreshToken": body["refreshToken"]}


def _write(folder: Path, login: dict[str, str]) -> Path:
    path = folder / "auth.json"
    path.write_text(json.dumps(login))
    return path


async def _rpc_ok(emu: Emulator, token: str) -> bool:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            emu.url + "/agent.v1.AgentService/GetUsableModels",
            content=b"",
            headers={"authorization": f"Bearer {token}", "content-type": "application/proto"},
        )
    return r.status_code == 200


async def test_browser_login_refreshes_before_expiry_in_memory(login_dir: Path) -> None:
    async with Emulator() as emu:
        login = await _login(emu)
        path = _write(login_dir, login)
        config = CursorPipeConfig(backend_url=emu.url)
        async with httpx.AsyncClient() as http:
            clock = Clock(time.time())
            provider = TokenProvider(config, http, clock=clock)
            assert provider.credential.kind == "access_token" and provider.credential.path == path
            first = await provider.token()
            assert first == login["accessToken"] and provider.exchanges == 0
            clock.now = refresh_at(provider._token) + 1  # type: ignore[arg-type]
            # Single flight: many callers at the refresh point cause one redemption.
            tokens = await asyncio.gather(*(provider.token() for _ in range(8)))
            assert len(set(tokens)) == 1 and tokens[0] != first
            assert provider.exchanges == 1
            assert await _rpc_ok(emu, tokens[0])
            redeemed = [r for r in emu.requests if r.path == EXCHANGE_PATH]
            assert redeemed[-1].headers["authorization"] == f"Bearer {login['refreshToken']}"
        # Kept in memory: the CLI's file is not rewritten.
        assert json.loads(path.read_text()) == login


async def test_file_refreshed_by_the_cli_is_used_without_a_redemption(login_dir: Path) -> None:
    async with Emulator(Behaviour(token_lifetime_s=600)) as emu:
        path = _write(login_dir, await _login(emu))
        async with httpx.AsyncClient() as http:
            clock = Clock(time.time())
            provider = TokenProvider(CursorPipeConfig(backend_url=emu.url), http, clock=clock)
            first = await provider.token()
            emu.behaviour.token_lifetime_s = 3600
            newer = await _login(emu)  # the CLI refreshed its login meanwhile
            _write(login_dir, newer)
            clock.now = refresh_at(provider._token) + 1  # type: ignore[arg-type]
            second = await provider.token()
            assert second == newer["accessToken"] != first
            assert provider.exchanges == 0
        assert path.exists()


async def test_401_refreshes_a_stored_login_and_the_turn_succeeds(login_dir: Path) -> None:
    async with Emulator() as emu:
        real = await _login(emu)
        # An access token the backend no longer accepts (not one it issued), but a valid refresh token.
        _write(
            login_dir,
            {"accessToken": "stale.eyJleHAiOjQxMDI0NDQ4MDB9.sig", "refreshToken": real["refreshToken"]},
        )
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, max_retries=0)
        transport = ConnectTransport(config)
        async with CursorClient(config, transport=transport) as client:
            result = await client.complete("composer-2", prompt="after a 401")
        assert result.text == expected_reply("after a 401")
        assert transport.auth.exchanges == 1
        assert any(r.status == 401 for r in emu.requests)


async def test_refresh_token_refused_everywhere_says_log_in_again(login_dir: Path) -> None:
    async with Emulator() as emu:
        _write(login_dir, {"accessToken": "stale.eyJleHAiOjF9.sig", "refreshToken": "not-a-refresh-token"})
        async with httpx.AsyncClient() as http:
            provider = TokenProvider(CursorPipeConfig(backend_url=emu.url), http)
            with pytest.raises(AuthenticationError, match="agent login") as info:
                await provider.token()
        assert info.value.code == "login_expired"
        assert "not-a-refresh-token" not in str(info.value)
        # connect.md §2.5 [X]: the re-exchange first, then the IDE's /oauth/token.
        paths = [r.path for r in emu.requests]
        assert paths == [EXCHANGE_PATH, "/oauth/token"]


async def test_oauth_token_fallback_shapes() -> None:
    answers = {
        "ok": httpx.Response(
            200, json={"access_token": "new_access_token_abc", "id_token": "i", "shouldLogout": False}
        ),
        "logout": httpx.Response(200, json={"access_token": "", "shouldLogout": True}),
        "down": httpx.Response(503),
    }
    from cursorpipe.auth._exchange import refresh_login

    for case, answer in answers.items():
        seen: list[httpx.Request] = []

        async def handler(
            request: httpx.Request, answer: httpx.Response = answer, seen: list[httpx.Request] = seen
        ) -> httpx.Response:
            seen.append(request)
            if request.url.path == EXCHANGE_PATH:
                return httpx.Response(401, json={"message": "no"})
            return answer

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            if case == "ok":
                assert await refresh_login(http, "http://b.test", "rt_123456789") == (
                    "new_access_token_abc",
                    None,
                )
                body = json.loads(seen[-1].content)
                assert body["grant_type"] == "refresh_token" and body["refresh_token"] == "rt_123456789"
            elif case == "logout":
                with pytest.raises(AuthenticationError, match="agent login"):
                    await refresh_login(http, "http://b.test", "rt_123456789")
            else:
                with pytest.raises(NetworkError) as info:
                    await refresh_login(http, "http://b.test", "rt_123456789")
                assert info.value.retryable


async def test_transient_exchange_401_at_start_up_heals_with_time() -> None:
    """Issue 12 item 7: one 401 from the token exchange must not leave every request 401 for good."""
    async with Emulator() as emu:
        clock = Clock(time.time())
        config = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
        transport = ConnectTransport(config, clock=clock)
        emu.inject(Fault.UNAUTHENTICATED_EXCHANGE)
        async with CursorClient(config, transport=transport) as client:
            with pytest.raises(AuthenticationError):
                await client.complete("composer-2", prompt="first")
            exchanges = sum(1 for r in emu.requests if r.path == EXCHANGE_PATH)
            # Remembered for a moment: no hammering of the exchange.
            with pytest.raises(AuthenticationError):
                await client.complete("composer-2", prompt="again")
            assert sum(1 for r in emu.requests if r.path == EXCHANGE_PATH) == exchanges
            clock.now += 6  # past the first backoff
            result = await client.complete("composer-2", prompt="healed")
        assert result.text == expected_reply("healed")


async def test_remembered_failure_backs_off_and_success_resets() -> None:
    async with Emulator() as emu:
        clock = Clock(time.time())
        async with httpx.AsyncClient() as http:
            provider = TokenProvider(
                CursorPipeConfig(backend_url=emu.url, api_key=emu.api_key), http, clock=clock
            )
            emu.inject(Fault.UNAUTHENTICATED_EXCHANGE, times=2)
            with pytest.raises(AuthenticationError):
                await provider.token()
            clock.now += 6
            with pytest.raises(AuthenticationError):
                await provider.token()  # second refusal: the pause doubles
            clock.now += 6
            with pytest.raises(AuthenticationError):
                await provider.token()  # still inside the 10 s pause: no exchange
            assert provider.exchanges == 2
            clock.now += 5
            assert await _rpc_ok(emu, await provider.token())
            assert provider.exchanges == 3
            await provider.invalidate()
            assert await provider.token() and provider.exchanges == 4  # no failure left behind
