"""``TokenProvider``: one cached access token per transport, refreshed by the SDK rule.

connect.md §2.3: refresh when ``now >= max(exp - 5 min, iat + lifetime / 2)``; a token without a
readable ``exp`` gets a 30-minute lifetime from when we obtained it. Concurrent callers share one
in-flight exchange (single flight, design.md lesson 5). A retryable refresh failure while the old
token is still valid keeps the old token and retries 30 s later. A non-retryable failure is
remembered and re-raised without new exchanges, but only for a while (5 s, doubling to 5 min):
one transient 401 at start-up must not leave every later request failing for good (issue 12
item 7); a success forgets it. connect.md §2.4: on ``unauthenticated`` the caller invalidates the
token and retries once with a forced renewal.

Browser logins (the Cursor CLI's ``auth.json`` or keychain: an access token with a refresh token,
live-dialect.md row 19) are refreshed by the same rule and after a 401: the store is re-read
first (the CLI may already have refreshed it), then the refresh token is redeemed (see
:func:`~cursorpipe.auth._exchange.refresh_login`). The new tokens are kept in memory only and
never written back: connect.md §2.5 reports that the CLI itself never redeems a browser-login
refresh token, so the store's format and rotation rules for refreshed tokens are the CLI's
business, and overwriting its file could break the CLI's own login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from .._constants import TOKEN_DEFAULT_LIFETIME_S, TOKEN_REFRESH_MARGIN_S, TOKEN_RETRY_AFTER_FAILURE_S
from .._redact import register_secret
from ..config import CursorPipeConfig
from ..errors import AuthenticationError, CursorPipeError
from ._exchange import exchange_for_tokens, refresh_login
from ._jwt import jwt_claims, numeric_claim
from ._sources import Credential, discover_credential, reload_credential

__all__ = ["AccessToken", "SharedTokens", "TokenProvider", "missing_credentials_error", "refresh_at"]

log = logging.getLogger("cursorpipe.auth")

Clock = Callable[[], float]

#: How long a non-retryable auth failure is re-raised without asking again: first, and at most.
AUTH_FAILURE_BACKOFF_S = 5.0
AUTH_FAILURE_BACKOFF_MAX_S = 300.0


def missing_credentials_error() -> AuthenticationError:
    """The error for "no credentials anywhere", saying exactly what to do."""
    return AuthenticationError(
        "No Cursor credentials found. Set CURSOR_API_KEY (or CURSORPIPE_API_KEY) to a Cursor API key "
        "(Cursor dashboard > API keys), or log in once with the Cursor CLI (`agent login`). "
        "Run `cursorpipe doctor` to see every place that was checked.",
        code="no_credentials",
    )


@dataclass(frozen=True)
class AccessToken:
    """An access token with its validity window (seconds since the epoch)."""

    value: str
    issued_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"AccessToken(issued_at={self.issued_at:.0f}, expires_at={self.expires_at:.0f})"

    @classmethod
    def parse(cls, value: str, now: float, *, fresh: bool = False) -> AccessToken:
        """Read ``exp``/``iat`` from a JWT; fall back to ``now`` + 30 min (connect.md §2.3).

        ``fresh`` (a token just issued to us): its lifetime ``exp - iat`` is measured from our own
        clock, so a skewed local clock cannot make every fresh token look due for refresh."""
        register_secret(value)
        claims = jwt_claims(value)
        exp = numeric_claim(claims, "exp")
        iat = numeric_claim(claims, "iat")
        if iat is None:
            iat = numeric_claim(claims, "time")  # IDE session tokens carry `time` (connect.md §2.3)
        if exp is None:
            return cls(value, now, now + TOKEN_DEFAULT_LIFETIME_S)
        if fresh and iat is not None and iat < exp:
            return cls(value, now, now + (exp - iat))
        if iat is None or iat > exp:
            iat = min(now, exp)
        return cls(value, iat, exp)


def refresh_at(token: AccessToken) -> float:
    """When ``token`` should be replaced: max(exp - 5 min, iat + lifetime / 2) (connect.md §2.3)."""
    lifetime = token.expires_at - token.issued_at
    return max(token.expires_at - TOKEN_REFRESH_MARGIN_S, token.issued_at + lifetime / 2)


class SharedTokens(Protocol):
    """Exchanged tokens of one API key shared between processes (the team gateway's store), so N
    replicas do not exchange the same key N times. Failures to reach it are ``CursorPipeError``s
    and only cost an exchange."""

    async def get(self) -> AccessToken | None:
        """A token another process stored, if any."""

    async def put(self, token: AccessToken) -> None:
        """Offer a freshly exchanged token to the other processes."""

    async def drop(self, value: str) -> None:
        """Cursor refused ``value``: forget it if it is still the shared one."""


class TokenProvider:
    """Hands out a valid access token for ``config``'s credential; safe under concurrency.
    ``shared`` (API keys only) is consulted before an exchange and told about new tokens."""

    def __init__(
        self,
        config: CursorPipeConfig,
        http: httpx.AsyncClient,
        *,
        headers: Mapping[str, str] | None = None,
        clock: Clock = time.time,
        credential: Credential | None = None,
        shared: SharedTokens | None = None,
    ) -> None:
        self.shared = shared
        self._config = config
        self._http = http
        self._headers = dict(headers or {})
        self._clock = clock
        self._credential = credential
        self._discovered = credential is not None
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self._retry_not_before = 0.0
        self._fatal: CursorPipeError | None = None
        self._fatal_until = 0.0
        self._fatal_backoff = 0.0
        self._rejected: str | None = None
        self._on_disk: Credential | None = None  # the stored login as last read from its store
        self.exchanges = 0
        """How many exchanges were made (for tests and diagnostics)."""

    # ------------------------------------------------------------------------------------------
    @property
    def credential(self) -> Credential:
        """The credential in use (discovered on first access); raises when there is none."""
        if not self._discovered:
            self._credential = discover_credential(self._config)
            self._discovered = True
        if self._credential is None:
            raise missing_credentials_error()
        return self._credential

    @property
    def api_key(self) -> str | None:
        """The raw API key, for REST calls that take it directly (connect.md §2.7), if we have one."""
        cred = self.credential
        return cred.secret if cred.kind == "api_key" else None

    @property
    def source(self) -> str:
        """Where the credential came from (never the value)."""
        return self.credential.source

    # ------------------------------------------------------------------------------------------
    async def token(self) -> str:
        """A valid access token, exchanging or refreshing first when the rule says so."""
        current = self._token
        if current is not None and self._clock() < refresh_at(current):
            return current.value
        async with self._lock:
            current = self._token
            now = self._clock()
            if current is not None and now < refresh_at(current):
                return current.value
            if current is not None and now < current.expires_at and now < self._retry_not_before:
                return current.value
            return (await self._renew(current)).value

    async def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (after ``unauthenticated``, connect.md §2.4). With ``token`` only
        when it is still the cached one, so N callers failing together cause one renewal."""
        async with self._lock:
            if self._token is not None and (token is None or self._token.value == token):
                self._rejected = self._token.value
                self._token = None
                self._retry_not_before = 0.0
                if self.shared is not None:
                    with contextlib.suppress(CursorPipeError):  # costs at most an exchange elsewhere
                        await self.shared.drop(self._rejected)

    async def _renew(self, current: AccessToken | None) -> AccessToken:
        now = self._clock()
        if self._fatal is not None:
            if now < self._fatal_until:
                raise self._fatal
            log.info("cursorpipe: retrying authentication after an earlier failure (%s)", self._fatal.code)
        try:
            token = await self._obtain(current, now)
        except CursorPipeError as exc:
            if exc.retryable:
                raise
            # Remembered, not forever: a transient refusal must heal (issue 12 item 7).
            self._fatal = exc
            self._fatal_backoff = min(
                AUTH_FAILURE_BACKOFF_MAX_S,
                self._fatal_backoff * 2 if self._fatal_backoff else AUTH_FAILURE_BACKOFF_S,
            )
            self._fatal_until = self._clock() + self._fatal_backoff
            raise
        self._fatal = None
        self._fatal_backoff = 0.0
        self._rejected = None
        return token

    async def _obtain(self, current: AccessToken | None, now: float) -> AccessToken:
        cred = self.credential
        if cred.path is not None or cred.refresh_token is not None:
            # A stored login: the CLI may have refreshed (or replaced) it since we read it.
            reread = reload_credential(cred)
            seen = self._on_disk or cred
            if reread is not None and (reread.secret, reread.kind) != (seen.secret, seen.kind):
                # Compared with what the store held last time, not with our refreshed copy: only
                # a change made by the CLI replaces the tokens we refreshed ourselves.
                log.info("cursorpipe: the Cursor CLI login changed on disk; using the new one")
                self._on_disk = reread
                self._credential = cred = reread
                if cred.kind == "access_token":
                    token = AccessToken.parse(cred.secret, now)
                    if token.value != self._rejected and now < refresh_at(token):
                        return self._keep(token)
        if cred.kind == "api_key":
            return await self._exchange(cred.secret, current, now)
        if cred.refresh_token:
            if current is None and cred.secret != self._rejected:
                # The stored (or last refreshed) access token, while the refresh rule allows it.
                stored = AccessToken.parse(cred.secret, now)
                if now < refresh_at(stored):
                    return self._keep(stored)
            return await self._refresh_login(cred, current, now)
        return self._renew_static(cred, current, now)

    def _keep(self, token: AccessToken) -> AccessToken:
        self._token = token
        self._retry_not_before = 0.0
        return token

    async def _exchange(self, secret: str, current: AccessToken | None, now: float) -> AccessToken:
        shared = await self._from_shared(current, now)
        if shared is not None:
            return self._keep(shared)
        try:
            self.exchanges += 1
            value, _refresh = await exchange_for_tokens(
                self._http, self._config.backend_url, secret, headers=self._headers
            )
        except CursorPipeError as exc:
            return self._keep_on_retryable(exc, current, now)
        token = self._keep(AccessToken.parse(value, self._clock(), fresh=True))
        if self.shared is not None:
            with contextlib.suppress(CursorPipeError):
                await self.shared.put(token)
        return token

    async def _from_shared(self, current: AccessToken | None, now: float) -> AccessToken | None:
        if self.shared is None:
            return None
        try:
            token = await self.shared.get()
        except CursorPipeError as exc:
            log.debug("cursorpipe: shared token cache unavailable (%s); exchanging", exc.code)
            return None
        if token is None or token.value == self._rejected or now >= refresh_at(token):
            return None
        if current is not None and token.value == current.value:
            return None  # the one being replaced
        return token

    async def _refresh_login(self, cred: Credential, current: AccessToken | None, now: float) -> AccessToken:
        assert cred.refresh_token is not None
        try:
            self.exchanges += 1
            value, refresh = await refresh_login(
                self._http, self._config.backend_url, cred.refresh_token, headers=self._headers
            )
        except CursorPipeError as exc:
            return self._keep_on_retryable(exc, current, now)
        # In memory only (see the module docstring for why the CLI's store is not rewritten).
        if self._on_disk is None:
            self._on_disk = cred
        self._credential = replace(cred, secret=value, refresh_token=refresh or cred.refresh_token)
        log.info("cursorpipe: refreshed the Cursor CLI login from %s", cred.source)
        return self._keep(AccessToken.parse(value, self._clock(), fresh=True))

    def _keep_on_retryable(
        self, exc: CursorPipeError, current: AccessToken | None, now: float
    ) -> AccessToken:
        if exc.retryable and current is not None and now < current.expires_at:
            # connect.md §2.3: keep the still-valid token, try again in about 30 s.
            log.warning("cursorpipe: access-token refresh failed (%s); keeping the current token", exc.code)
            self._retry_not_before = now + TOKEN_RETRY_AFTER_FAILURE_S
            return current
        raise exc

    def _renew_static(self, cred: Credential, current: AccessToken | None, now: float) -> AccessToken:
        # A token given as is (CURSOR_AUTH_TOKEN, or a stored login without a refresh token) is not
        # refreshed: the CLI never refreshes CURSOR_AUTH_TOKEN (connect.md §2.1). Use it until it
        # expires.
        token = current or AccessToken.parse(cred.secret, now)
        if token.expires_at <= now:
            raise AuthenticationError(
                f"The Cursor access token from {cred.source} has expired. Log in again with the Cursor "
                "CLI (`agent login`), or set CURSOR_API_KEY instead (API keys are refreshed "
                "automatically).",
                code="token_expired",
            )
        # Keep serving it; re-evaluate no sooner than 30 s from now.
        self._token = token
        self._retry_not_before = now + TOKEN_RETRY_AFTER_FAILURE_S
        return token
