"""Auth: credential discovery order, the API-key exchange and its errors, the refresh rule with an
injected clock, single flight, invalidation, and secrets kept out of errors and logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import httpx
import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe.auth import (
    EXCHANGE_PATH,
    AccessToken,
    Credential,
    TokenProvider,
    cli_auth_paths,
    discover_credential,
    refresh_at,
)
from cursorpipe.errors import (
    AuthenticationError,
    ConfigurationError,
    NetworkError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
)

KEY = "crsr_unit_test_key_0123456789"


def jwt(**claims: object) -> str:
    def seg(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none'})}.{seg(claims)}.sig"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Backend:
    """An httpx.MockTransport handler for /auth/exchange_user_api_key."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[httpx.Request] = []
        self.status: list[int] = []  # statuses to answer before succeeding
        self.delay = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status:
            code = self.status.pop(0)
            return httpx.Response(code, json={"message": f"failed with {KEY}"}, headers={"retry-after": "7"})
        iat = self.clock()
        return httpx.Response(
            200, json={"accessToken": jwt(iat=iat, exp=iat + self.lifetime, n=len(self.calls)), "x": 1}
        )


def make(clock: Clock, backend: Backend, **cfg: object) -> TokenProvider:
    config = CursorPipeConfig(api_key=KEY, backend_url="http://backend.test", **cfg)  # type: ignore[arg-type]
    http = httpx.AsyncClient(transport=httpx.MockTransport(backend))
    return TokenProvider(config, http, clock=clock, headers={"x-cursor-client-type": "sdk"})


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------
def test_api_key_wins_over_token() -> None:
    cred = discover_credential(CursorPipeConfig(api_key=KEY, auth_token="tok_abcdef"))
    assert cred is not None and cred.kind == "api_key" and cred.secret == KEY
    assert KEY not in repr(cred)


def test_env_api_key_and_auth_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSOR_AUTH_TOKEN", "tok_from_env_123")
    cred = discover_credential(CursorPipeConfig())
    assert cred is not None and cred.kind == "access_token" and "CURSOR_AUTH_TOKEN" in cred.source
    monkeypatch.setenv("CURSOR_API_KEY", KEY)
    cred = discover_credential(CursorPipeConfig())
    assert cred is not None and cred.kind == "api_key"


def test_cli_auth_json_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store = tmp_path / "cursor" / "auth.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"accessToken": "stored_access_1", "refreshToken": "stored_refresh_1"}))
    cred = discover_credential(CursorPipeConfig(), platform="linux")
    assert cred is not None and cred.kind == "access_token" and cred.secret == "stored_access_1"
    assert cred.refresh_token == "stored_refresh_1" and str(store) in cred.source
    store.write_text(json.dumps({"accessToken": "a", "apiKey": KEY}))
    cred = discover_credential(CursorPipeConfig(), platform="linux")
    assert cred is not None and cred.kind == "api_key"


def test_cli_auth_json_unreadable_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "cursor").mkdir()
    (tmp_path / "cursor" / "auth.json").write_text("{not json")
    assert discover_credential(CursorPipeConfig(), platform="linux") is None


def test_cli_paths_per_os(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "APPDATA": str(tmp_path / "AppData")}
    assert cli_auth_paths(platform="darwin", environ=env) == [tmp_path / ".cursor" / "auth.json"]
    assert cli_auth_paths(platform="win32", environ=env) == [tmp_path / "AppData" / "Cursor" / "auth.json"]
    assert cli_auth_paths(platform="linux", environ=env) == [tmp_path / ".config" / "cursor" / "auth.json"]
    env["XDG_CONFIG_HOME"] = str(tmp_path / "x")
    env["CURSOR_CONFIG_DIR"] = str(tmp_path / "c")
    assert cli_auth_paths(platform="linux", environ=env) == [
        tmp_path / "c" / "auth.json",
        tmp_path / "x" / "cursor" / "auth.json",
    ]


async def test_missing_credentials_says_what_to_do() -> None:
    provider = TokenProvider(CursorPipeConfig(), httpx.AsyncClient())
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    msg = str(info.value)
    assert "CURSOR_API_KEY" in msg and "agent login" in msg and "cursorpipe doctor" in msg
    assert info.value.code == "no_credentials"


# ---------------------------------------------------------------------------------------------
# exchange
# ---------------------------------------------------------------------------------------------
async def test_exchange_request_shape() -> None:
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    token = await provider.token()
    assert token.count(".") == 2
    (req,) = backend.calls
    assert req.method == "POST" and req.url.path == EXCHANGE_PATH
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-cursor-client-type"] == "sdk"
    assert req.content == b"{}"
    assert provider.api_key == KEY


@pytest.mark.parametrize(
    ("status", "exc_type", "retryable"),
    [
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (404, ConfigurationError, False),
        (429, RateLimitError, True),
        (503, NetworkError, True),
        (418, AuthenticationError, False),
    ],
)
async def test_exchange_errors(status: int, exc_type: type[Exception], retryable: bool) -> None:
    clock = Clock()
    backend = Backend(clock)
    backend.status = [status]
    provider = make(clock, backend)
    with pytest.raises(exc_type) as info:
        await provider.token()
    assert getattr(info.value, "retryable", None) is retryable
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    if status == 429:
        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]


async def test_sign_in_policy_violation() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "sign_in_policy_violation"})

    config = CursorPipeConfig(api_key=KEY, backend_url="http://backend.test")
    provider = TokenProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(PermissionDeniedError) as info:
        await provider.token()
    assert info.value.code == "sign_in_policy_violation"


async def test_exchange_bad_body_and_connection_failure() -> None:
    async def no_token(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"refreshToken": "r"})

    async def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    config = CursorPipeConfig(api_key=KEY, backend_url="http://backend.test")
    with pytest.raises(ProtocolError):
        await TokenProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(no_token))).token()
    with pytest.raises(NetworkError) as info:
        await TokenProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(broken))).token()
    assert info.value.retryable


async def test_non_retryable_failure_is_remembered() -> None:
    clock = Clock()
    backend = Backend(clock)
    backend.status = [401]
    provider = make(clock, backend)
    with pytest.raises(AuthenticationError):
        await provider.token()
    with pytest.raises(AuthenticationError):
        await provider.token()
    assert len(backend.calls) == 1


# ---------------------------------------------------------------------------------------------
# refresh rule (connect.md §2.3)
# ---------------------------------------------------------------------------------------------
def test_refresh_rule() -> None:
    hour = AccessToken("t", issued_at=0.0, expires_at=3600.0)
    assert refresh_at(hour) == 3300.0  # exp - 5 min beats half-life (1800)
    short = AccessToken("t", issued_at=0.0, expires_at=400.0)
    assert refresh_at(short) == 200.0  # half-life beats exp - 5 min (100)
    unknown = AccessToken.parse("not-a-jwt", now=50.0)
    assert unknown.expires_at == 50.0 + 1800.0
    assert AccessToken.parse(jwt(exp=900), now=100.0).issued_at == 100.0


async def test_refresh_before_expiry_with_clock() -> None:
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    first = await provider.token()
    clock.now += 3299
    assert await provider.token() == first
    clock.now += 2
    second = await provider.token()
    assert second != first and len(backend.calls) == 2


async def test_single_flight() -> None:
    clock = Clock()
    backend = Backend(clock)
    backend.delay = 0.05
    provider = make(clock, backend)
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert len(set(tokens)) == 1 and len(backend.calls) == 1
    clock.now += 4000
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert len(set(tokens)) == 1 and len(backend.calls) == 2


async def test_keep_old_token_on_retryable_refresh_failure() -> None:
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    first = await provider.token()
    clock.now += 3400  # past refresh point, before expiry
    backend.status = [503]
    assert await provider.token() == first
    assert await provider.token() == first  # no second attempt within 30 s
    assert len(backend.calls) == 2
    clock.now += 31
    assert await provider.token() != first
    assert len(backend.calls) == 3


async def test_retryable_failure_after_expiry_raises() -> None:
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    await provider.token()
    clock.now += 3700
    backend.status = [503]
    with pytest.raises(NetworkError):
        await provider.token()


async def test_invalidate_forces_one_reexchange() -> None:
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    first = await provider.token()
    await asyncio.gather(*(provider.invalidate(first) for _ in range(5)))
    second = await provider.token()
    await provider.invalidate(first)  # stale: must not drop the new one
    assert await provider.token() == second and len(backend.calls) == 2


async def test_static_token_used_as_is_and_expiry() -> None:
    clock = Clock()
    config = CursorPipeConfig(auth_token=jwt(iat=clock.now, exp=clock.now + 600))
    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    provider = TokenProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock)
    token = await provider.token()
    assert token == config.auth_token.get_secret_value()
    clock.now += 500
    assert await provider.token() == token
    clock.now += 200
    with pytest.raises(AuthenticationError) as info:
        await provider.token()
    assert "agent login" in str(info.value) and token not in str(info.value)
    assert calls == [] and provider.api_key is None


async def test_no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    backend = Backend(clock)
    provider = make(clock, backend)
    token = await provider.token()
    clock.now += 3400
    backend.status = [503]
    await provider.token()
    assert caplog.records, "the kept-token warning should be logged"
    assert KEY not in caplog.text and token not in caplog.text


def test_credential_repr_hides_secret() -> None:
    cred = Credential("access_token", "secret_value_1", "test", refresh_token="secret_value_2")
    assert "secret_value" not in repr(cred)
