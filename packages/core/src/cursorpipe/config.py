"""Configuration: ``CursorPipeConfig``, read from arguments, the environment and ``.env``.

Every variable has the prefix ``CURSORPIPE_``; a few also accept the name Cursor's own tools use
(``CURSOR_API_KEY``, ``CURSOR_AUTH_TOKEN``, ``CURSOR_BACKEND_URL``). Invalid values raise
:class:`~cursorpipe.errors.ConfigurationError` naming the variable at construction.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._constants import TOOL_RESULT_TIMEOUT_S
from .errors import ConfigurationError

__all__ = ["DEFAULT_BACKEND_URL", "DEFAULT_REST_URL", "CursorPipeConfig", "Strategy"]

#: connect.md §1.1: the SDK sends all Connect RPCs, auth and agent traffic to api2.
DEFAULT_BACKEND_URL = "https://api2.cursor.sh"
#: connect.md §1.1/§9.1: public REST API (model list with the raw API key).
DEFAULT_REST_URL = "https://api.cursor.com"

_PREFIX = "CURSORPIPE_"


class Strategy(StrEnum):
    """Which transport serves requests."""

    CONNECT = "connect"
    """Cursor's cloud API directly (Connect-RPC + protobuf over httpx/h2). No CLI needed."""
    ACP = "acp"
    """A persistent ``agent acp`` process speaking JSON-RPC over stdio."""
    SUBPROCESS = "subprocess"
    """One ``agent --print`` process per request."""
    AUTO = "auto"
    """connect when credentials exist, else acp when the binary exists, else subprocess."""


def _env(name: str, *others: str) -> AliasChoices:
    return AliasChoices(name, _PREFIX + name.upper(), *others)


class CursorPipeConfig(BaseSettings):
    """All settings of cursorpipe. Field ``x`` is read from ``CURSORPIPE_X`` (and ``.env``)."""

    model_config = SettingsConfigDict(
        env_prefix=_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        frozen=True,
    )

    # --- transports ---------------------------------------------------------------------------
    agent_bin: str = Field("agent", description="Cursor CLI executable (name on PATH or a path).")
    strategy: Strategy = Field(Strategy.AUTO, description="connect | acp | subprocess | auto.")
    default_mode: Literal["ask", "plan"] = Field(
        "ask", description="Cursor mode for turns: 'ask' (read-only chat) or 'plan'."
    )
    default_model: str = Field("auto", description="Model used when a caller passes none.")
    request_timeout_s: float = Field(300.0, gt=0, description="Deadline of one request, in seconds.")
    tool_result_timeout_s: float = Field(
        TOOL_RESULT_TIMEOUT_S,
        gt=0,
        description="Wait for one tool_handler result before the run is cancelled.",
    )
    acp_startup_timeout_s: float = Field(30.0, gt=0, description="Deadline for `agent acp` to start.")
    acp_max_restarts: int = Field(3, ge=0, description="Automatic restarts of a crashed `agent acp`.")
    acp_permission_policy: Literal["reject", "allow_once", "allow_always"] = Field(
        "reject", description="Answer to the agent's permission requests (acp transport)."
    )
    workspace: str = Field("", description="Working directory given to the agent ('' = a private temp dir).")
    max_retries: int = Field(2, ge=0, le=10, description="Client retries of retryable failures.")

    # --- credentials and backend --------------------------------------------------------------
    api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=_env("api_key", "CURSOR_API_KEY"),
        description="Cursor API key (crsr_...); also read from CURSOR_API_KEY.",
    )
    auth_token: SecretStr = Field(
        SecretStr(""),
        validation_alias=_env("auth_token", "CURSOR_AUTH_TOKEN"),
        description="A ready access token, used as is; also read from CURSOR_AUTH_TOKEN.",
    )
    backend_url: str = Field(
        DEFAULT_BACKEND_URL,
        validation_alias=_env("backend_url", "CURSOR_BACKEND_URL"),
        description="Where Connect RPC and REST calls go; also read from CURSOR_BACKEND_URL.",
    )
    rest_url: str = Field(
        "",
        description="Public REST base (model list). '' = api.cursor.com, or backend_url when overridden.",
    )
    use_http2: Literal["auto", "always", "never"] = Field(
        "auto", description="connect transport: full-duplex HTTP/2 Run ('auto': for https backends)."
    )
    connect_dialect: Literal["cli", "sdk"] | None = Field(
        None,
        description=(
            "connect transport wire dialect: 'cli' (what live-tested clients send) or 'sdk' (Cursor's "
            "SDK). Unset = 'cli' with an automatic switch to the other on a known rejection."
        ),
    )
    client_version: str = Field(
        "", description="connect transport: x-cursor-client-version ('' = the dialect's default)."
    )
    approve_web_queries: bool = Field(
        True, description="connect transport: approve Cursor's web search / web fetch requests."
    )
    enable_profiling: bool = Field(False, description="Log time-to-first-chunk, chunk gaps and totals.")

    # --- server ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Server bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Server port.")
    pool_size: int = Field(5, ge=0, le=256, description="Sessions pre-warmed at server start.")
    bearer_token: SecretStr = Field(SecretStr(""), description="Bearer token clients must send.")
    allow_insecure_bind: bool = Field(False, description="Allow a non-loopback bind without a bearer token.")
    max_concurrency: int = Field(32, ge=1, description="Server: requests served at once.")
    queue_timeout_s: float = Field(5.0, ge=0, description="Server: wait for a free slot before 429/503.")
    strict_params: bool = Field(False, description="Server: reject unknown request fields with 400.")
    session_idle_s: float = Field(1800.0, gt=0, description="Server: idle expiry of sessions.")
    cors_origins: str = Field("", description="Server: comma-separated CORS origins ('' = CORS off).")
    allowed_hosts: str = Field(
        "",
        description="Server without a bearer token: Host values accepted besides loopback ones "
        "(comma-separated; anti DNS rebinding).",
    )
    max_body_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Server: largest request body accepted (413 beyond)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Server: time a connection has to send a complete request head."
    )
    body_timeout_s: float = Field(30.0, gt=0, description="Server: time a request has to send its body.")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="Server: idle keep-alive timeout.")
    max_connections: int = Field(
        0, ge=0, description="Server: open connections at most (0 = from the open-file limit)."
    )
    log_level: str = Field("info", description="Log level of the server and CLI.")

    # --- team gateway (server; issue 17) ---------------------------------------------------------
    auth_mode: Literal["token", "passthrough"] = Field(
        "token",
        description="Server: 'token' = one shared account (the server's credentials, callers send "
        "CURSORPIPE_BEARER_TOKEN); 'passthrough' = each caller's bearer / x-api-key is their own "
        "Cursor API key and their requests run on their account.",
    )
    allowed_key_hashes: str = Field(
        "",
        description="Server, passthrough: SHA-256 hex digests of the API keys allowed in "
        "(comma-separated; '' = any key Cursor accepts).",
    )
    state_url: SecretStr = Field(
        SecretStr(""),
        description="Server: redis:// or rediss:// URL of the Redis/Valkey that replicas share sessions "
        "and tokens through ('' = in-process state, as with one process).",
    )
    state_prefix: str = Field("cursorpipe:", description="Server: prefix of every key in the shared store.")
    session_lock_ttl_s: float = Field(
        30.0,
        gt=0,
        description="Server, shared state: lifetime of a session's turn lease (renewed while it runs).",
    )
    session_lock_wait_s: float = Field(
        60.0, ge=0, description="Server, shared state: wait for a session's running turn before 409."
    )
    per_key_concurrency: int = Field(
        0, ge=0, description="Server, passthrough: requests one key runs at once (0 = max_concurrency / 4)."
    )
    per_key_rate_per_min: float = Field(
        0.0, ge=0, description="Server, passthrough: requests a minute per key (0 = unlimited)."
    )
    per_key_burst: int = Field(10, ge=1, description="Server, passthrough: requests a key may send at once.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc), code="invalid_config") from None

    @field_validator("default_mode", mode="before")
    @classmethod
    def _no_agent_mode(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "agent":
            raise ValueError(
                "'agent' mode lets Cursor edit files and run commands; cursorpipe is a chat bridge and "
                "only allows 'ask' or 'plan'"
            )
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("backend_url", "rest_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("strategy", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("connect_dialect", mode="before")
    @classmethod
    def _dialect(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @field_validator("client_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.strip()
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must be one printable token (it is sent as an HTTP header)")
        return value

    @field_validator("allowed_key_hashes")
    @classmethod
    def _key_hashes(cls, value: str) -> str:
        items = [p.strip().lower() for p in re.split(r"[,\s]+", value) if p.strip()]
        if any(not re.fullmatch(r"[0-9a-f]{64}", i) for i in items):
            # The message never repeats the value: a key pasted here by mistake stays secret.
            raise ValueError(
                "each entry must be the SHA-256 hex digest (64 characters) of an API key "
                '(printf %s "$KEY" | sha256sum), not the key itself'
            )
        return ",".join(items)

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (a Redis or Valkey server)")
        return SecretStr(url)

    @property
    def per_key_limit(self) -> int:
        """Requests one caller key runs at once: ``per_key_concurrency`` or a quarter of
        ``max_concurrency`` (so one caller's burst leaves room for the others)."""
        return self.per_key_concurrency or max(1, self.max_concurrency // 4)

    @property
    def effective_rest_url(self) -> str:
        """REST base: explicit ``rest_url``; else ``backend_url`` when it was overridden (as the SDK
        does with ``CURSOR_BACKEND_URL``, connect.md §1.1); else ``https://api.cursor.com``."""
        if self.rest_url:
            return self.rest_url
        if self.backend_url != DEFAULT_BACKEND_URL:
            return self.backend_url
        return DEFAULT_REST_URL

    @property
    def has_credentials(self) -> bool:
        """Whether an API key or access token is configured (stored CLI logins are not checked)."""
        return bool(self.api_key.get_secret_value() or self.auth_token.get_secret_value())


def _variable(field: str) -> str:
    return _PREFIX + field.upper()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = str(err["loc"][0]) if err["loc"] else "?"
        if loc.upper().startswith(_PREFIX):
            loc = loc[len(_PREFIX) :]
        name = _variable(loc) if not loc.upper().startswith("CURSOR_") else loc.upper()
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {msg}")
    return "Invalid cursorpipe configuration: " + "; ".join(parts) + "."
