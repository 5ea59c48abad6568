"""The API-key exchange: ``POST {backend}/auth/exchange_user_api_key`` (connect.md §2.2).

Bearer API key, JSON body ``{}``; a 200 carries ``{"accessToken": ...}``. Every other outcome maps
to a cursorpipe error as in the §2.2 table. No message ever contains the key or a token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from .._net import network_errors
from .._redact import redact, register_secret
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    NetworkError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
)

__all__ = ["EXCHANGE_PATH", "OAUTH_TOKEN_PATH", "exchange_api_key", "exchange_for_tokens", "refresh_login"]

EXCHANGE_PATH = "/auth/exchange_user_api_key"
#: The IDE's Auth0-style refresh (connect.md §2.5, first row), tried when the re-exchange refuses.
OAUTH_TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path, not a secret
#: The public client id the IDE sends with ``grant_type=refresh_token`` (connect.md §2.5).
_IDE_CLIENT_ID = "KbZUR41cY7W6zRSdpSUJ7I7mLYBKOCmB"
_LOGIN_AGAIN = (
    "Your Cursor CLI login could not be refreshed; log in again with the Cursor CLI (`agent login`), "
    "or set CURSOR_API_KEY (API keys are refreshed automatically)."
)

_FIX_KEY = (
    "Check the key (CURSOR_API_KEY / CURSORPIPE_API_KEY), create a new one in the Cursor dashboard, "
    "or log in with the Cursor CLI (`agent login`); `cursorpipe doctor` shows which credential is used."
)


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(body, dict):
        for key in ("message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return redact(value)[:300]
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


async def exchange_api_key(
    http: httpx.AsyncClient,
    backend_url: str,
    api_key: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> str:
    """Exchange ``api_key`` (or a refresh token, connect.md §2.5) for an access token."""
    token, _refresh = await exchange_for_tokens(
        http, backend_url, api_key, headers=headers, timeout_s=timeout_s
    )
    return token


async def exchange_for_tokens(
    http: httpx.AsyncClient,
    backend_url: str,
    api_key: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[str, str | None]:
    """Like :func:`exchange_api_key`, with the ``refreshToken`` of the answer when it has one."""
    register_secret(api_key)
    url = backend_url.rstrip("/") + EXCHANGE_PATH
    send = dict(headers or {})
    send["authorization"] = f"Bearer {api_key}"
    send["content-type"] = "application/json"
    with network_errors(
        f"Could not reach Cursor's auth endpoint at {backend_url} ({{exc}}). "
        "Check your network, proxy and CURSOR_BACKEND_URL."
    ):
        response = await http.post(url, content=b"{}", headers=send, timeout=timeout_s)
    status = response.status_code
    detail = _server_message(response)
    suffix = f" Server said: {detail}" if detail else ""
    if status == 200:
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise ProtocolError("The API-key exchange answered 200 with a body that is not JSON.") from exc
        token = body.get("accessToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ProtocolError("The API-key exchange answered 200 without an accessToken.")
        register_secret(token)
        refresh = body.get("refreshToken") if isinstance(body, dict) else None
        if isinstance(refresh, str) and refresh:
            register_secret(refresh)
            return token, refresh
        return token, None
    err: CursorPipeError
    if status == 401:
        err = AuthenticationError(
            f"Cursor rejected the API key (HTTP 401). {_FIX_KEY}{suffix}", code="bad_api_key"
        )
    elif status == 403:
        if "sign_in_policy_violation" in response.text:
            err = PermissionDeniedError(
                "Cursor refused sign-in for this account by policy (sign_in_policy_violation); ask your "
                "team admin, or use a key from an account that may sign in." + suffix,
                code="sign_in_policy_violation",
            )
        else:
            err = AuthenticationError(
                f"Cursor rejected the API key (HTTP 403). {_FIX_KEY}{suffix}", code="bad_api_key"
            )
    elif status == 404:
        err = ConfigurationError(
            f"{backend_url} has no API-key exchange endpoint (HTTP 404): the backend URL looks wrong. "
            "Unset CURSOR_BACKEND_URL / CURSORPIPE_BACKEND_URL to use https://api2.cursor.sh." + suffix,
            code="bad_backend_url",
        )
    elif status == 429:
        err = RateLimitError(
            "Cursor rate-limited the API-key exchange (HTTP 429); retry shortly." + suffix,
            retry_after=_retry_after(response),
        )
    elif status >= 500:
        err = NetworkError(
            f"Cursor's auth endpoint failed (HTTP {status}); retry shortly.{suffix}", code="unavailable"
        )
    else:
        err = AuthenticationError(
            f"The API-key exchange failed (HTTP {status}). {_FIX_KEY}{suffix}", code="exchange_failed"
        )
    err.request_id = response.headers.get("x-request-id")
    raise err


async def refresh_login(
    http: httpx.AsyncClient,
    backend_url: str,
    refresh_token: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[str, str | None]:
    """A new access token (and refresh token, if one came back) for a browser login.

    connect.md §2.5 is marked [X]: the sources disagree on which call redeems a browser-login
    refresh token. live-dialect.md row 19 (confidence A) says live peers re-exchange it at
    ``/auth/exchange_user_api_key`` as ``Bearer <refreshToken>``, and use ``/oauth/token``
    (``grant_type=refresh_token``) for IDE tokens. So the re-exchange goes first; only when it
    *refuses the token* (401/403/404, i.e. not a network or rate-limit failure, which are raised
    as they are so the caller retries) is ``/oauth/token`` tried. An ``/oauth/token`` answer with
    ``shouldLogout`` or an empty ``access_token`` means the login is over.
    """
    register_secret(refresh_token)
    try:
        return await exchange_for_tokens(
            http, backend_url, refresh_token, headers=headers, timeout_s=timeout_s
        )
    except (AuthenticationError, ConfigurationError, PermissionDeniedError) as exc:
        first: CursorPipeError = exc
    url = backend_url.rstrip("/") + OAUTH_TOKEN_PATH
    send = dict(headers or {})
    send["content-type"] = "application/json"
    payload = {"grant_type": "refresh_token", "client_id": _IDE_CLIENT_ID, "refresh_token": refresh_token}
    with network_errors(f"Could not reach Cursor's auth endpoint at {backend_url} ({{exc}})."):
        response = await http.post(url, content=json.dumps(payload).encode(), headers=send, timeout=timeout_s)
    status = response.status_code
    if status == 429:
        raise RateLimitError(
            "Cursor rate-limited the login refresh (HTTP 429); retry shortly.",
            retry_after=_retry_after(response),
        )
    if status >= 500:
        raise NetworkError(
            f"Cursor's auth endpoint failed (HTTP {status}); retry shortly.", code="unavailable"
        )
    body: object = None
    if status == 200:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
    access = body.get("access_token") if isinstance(body, dict) else None
    if (
        status != 200
        or not isinstance(access, str)
        or not access
        or (isinstance(body, dict) and body.get("shouldLogout") is True)
    ):
        err = AuthenticationError(_LOGIN_AGAIN, code="login_expired")
        err.__cause__ = first
        raise err
    register_secret(access)
    refresh = body.get("refresh_token") if isinstance(body, dict) else None
    if isinstance(refresh, str) and refresh:
        register_secret(refresh)
        return access, refresh
    return access, None
