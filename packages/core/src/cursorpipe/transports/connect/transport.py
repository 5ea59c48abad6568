"""``ConnectTransport``: Cursor's cloud API directly over Connect-RPC + protobuf (connect.md).

Per turn: a token from :class:`~cursorpipe.auth.TokenProvider`, a channel (full-duplex HTTP/2
``Run`` via :mod:`._h2`, or ``RunSSE`` + ``BidiAppend`` via :mod:`._http1`), the run request and the
answers of :class:`._turn.TurnMachine`, client heartbeats every 5 s, a 30 s stall detector, the
post-turn exchange up to the service's end-stream (for stateless requests in the background, after
the caller has the turn's end), and an immediate drop when the caller stops early
(docs/live-dialect.md rows 10-11).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx

from ..._codecs.connect import decode_unary_body, parse_unary_error
from ..._constants import (
    CANCEL_GRACE_S,
    CLIENT_HEARTBEAT_S,
    EXEC_HEARTBEAT_S,
    POST_TURN_GUARD_S,
    STALL_TIMEOUT_S,
)
from ..._net import network_errors
from ..._proto.agent.v1 import agent_pb2 as pb
from ..._proto.aiserver.v1 import server_config_pb2 as sc
from ..._tool_runner import run_tool_handler
from ...auth import TokenProvider
from ...config import CursorPipeConfig
from ...errors import (
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    ErrorCode,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    ProtocolError,
    SessionError,
    StreamDroppedError,
    StreamStalledError,
    ToolResultTimeoutError,
)
from ...types import (
    Event,
    ModelInfo,
    ToolCall,
    ToolHandler,
    ToolSpec,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)
from ..base import TransportCapabilities, TransportSession
from ._channel import Channel, ConnectCallError
from ._errors import map_connect_error
from ._http1 import Http1Channel
from ._models import (
    MODELS_PATH,
    USABLE_MODELS_PATH,
    ModelChoice,
    choose_model,
    parse_rest_models,
    parse_usable_models,
)
from ._turn import (
    CLI_CLIENT_VERSION,
    MCP_ALLOWED_TOOLS,
    ConversationState,
    Dialect,
    TurnMachine,
    WireProfile,
    build_run_request,
    cancel_message,
    conversation_id_for,
    exec_heartbeat_message,
    heartbeat_message,
    mcp_result_messages,
    normalise_call_id,
    offered_tools,
    profile_for,
    system_text,
)

if TYPE_CHECKING:
    from ._h2 import H2Connection

__all__ = ["CLIENT_TYPE", "CLIENT_VERSION", "ConnectTransport"]

log = logging.getLogger("cursorpipe.connect")

# Client identity (live-dialect.md row 1): by default the `cli` dialect, what every client proven
# against the live service sends; `sdk` (Cursor's SDK identity) is the other choice. See
# `_turn.WireProfile` for everything a dialect bundles.
CLIENT_TYPE = "cli"
CLIENT_VERSION = CLI_CLIENT_VERSION
USER_AGENT = "connect-es/1.6.1"  # §4.1 [C]
SERVER_CONFIG_PATH = "/aiserver.v1.ServerConfigService/GetServerConfig"
_HTTP2_OFF = (sc.HTTP2_CONFIG_FORCE_ALL_DISABLED, sc.HTTP2_CONFIG_FORCE_BIDI_DISABLED)
_MAX_RESUMES = 1
#: Default bound on one tool_handler call when the request carries none (config default).
_TOOL_RESULT_TIMEOUT_S = 120.0
#: Stateless tool turns without ``tool_requests_listed``: quiet time after the last announced
#: call got its exec before the batch counts as complete ([G], see TurnMachine.tool_batch).
TOOL_BATCH_GRACE_S = 0.3

#: The dialect that worked for an account, remembered for the process after an automatic switch
#: (key: a fingerprint of the backend and credential, never the credential itself).
_DIALECT_MEMORY: dict[str, Dialect] = {}
#: Stateless conversations whose id was rotated after a poisoned-conversation error (row 20).
_ROTATE_MAX = 1024


def _other(dialect: Dialect) -> Dialect:
    return "sdk" if dialect == "cli" else "cli"


_REFUSED_SYSTEM_PROMPT = "the service refused the custom system prompt option"


def _dialect_rejection(exc: ConnectCallError, mapped: CursorPipeError) -> str | None:
    """Why ``exc`` says the service refuses this dialect (live-dialect.md rows 1 and 2), or ``None``.

    Known refusals: an outdated client version (ERROR_OUTDATED_CLIENT / the version-gate text), the
    system-prompt option refused (``invalid_argument: unknown option '--system-prompt'``), and a gate
    on the client type (SDK access is reported to be allow-listed per account). The texts are what
    the peers recorded [B: live-dialect.md rows 1-2], so matching is loose and by keyword."""
    text = f"{exc.error.message} {mapped}".lower()
    if isinstance(mapped, OutdatedClientError):
        return "the service reported this client version as outdated"
    if exc.error.code == "invalid_argument" and ("system-prompt" in text or "system prompt" in text):
        return _REFUSED_SYSTEM_PROMPT
    if exc.error.code == "permission_denied" and any(
        k in text
        for k in ("client type", "client-type", "sdk", "preview access", "not allowed for this client")
    ):
        return "the service refused this client type"
    return None


class _Eof:
    pass


_EOF = _Eof()

Clock = Callable[[], float]


class ConnectTransport:
    """Talks to Cursor's backend directly: no CLI, no Node (issue 3).

    ``CursorClient(CursorPipeConfig(strategy="connect", backend_url=..., api_key=...))`` builds one.
    Keyword arguments exist for tests, benchmarks and ``doctor --live``: ``http`` (an
    ``httpx.AsyncClient`` to use), ``clock`` (for token refresh), ``stall_timeout_s``,
    ``heartbeat_s``, ``wire`` (a :class:`._turn.WireProfile`: every wire choice at once; setting it
    turns the automatic dialect switch off), ``client_version``, ``post_turn_guard_s`` (the bound on
    the wait for the end-stream after ``turn_ended``, in the background for stateless requests; 0
    drops the stream at ``turn_ended``, for comparison runs).

    The dialect comes from ``CURSORPIPE_CONNECT_DIALECT``; unset, it is ``cli`` and a known
    rejection (see :func:`_dialect_rejection`) switches to the other dialect once for the account,
    remembered for the process and logged at WARNING. A dialect set explicitly never switches.
    """

    name = "connect"

    def __init__(
        self,
        config: CursorPipeConfig | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        heartbeat_s: float = CLIENT_HEARTBEAT_S,
        cancel_grace_s: float = CANCEL_GRACE_S,
        tool_batch_grace_s: float = TOOL_BATCH_GRACE_S,
        exec_heartbeat_s: float = EXEC_HEARTBEAT_S,
        wire: WireProfile | None = None,
        client_version: str | None = None,
        post_turn_guard_s: float = POST_TURN_GUARD_S,
        workspace: str | None = None,
    ) -> None:
        self._config = config if config is not None else CursorPipeConfig()
        self._base = self._config.backend_url.rstrip("/")
        self._rest = self._config.effective_rest_url.rstrip("/")
        self._own_http = http is None
        self._http = http or self._http_client()
        version = client_version if client_version is not None else self._config.client_version
        self._fingerprint = self._account_fingerprint()
        if wire is not None:
            self._wire, self._dialect_fixed = wire, True
        elif self._config.connect_dialect is not None:
            self._wire, self._dialect_fixed = profile_for(self._config.connect_dialect, version), True
        else:
            remembered = _DIALECT_MEMORY.get(self._fingerprint, "cli")
            self._wire, self._dialect_fixed = profile_for(remembered, version), False
        self._client_version = version
        self.post_turn_guard_s = post_turn_guard_s
        self._conversation_salts: dict[str, str] = {}
        self._blob_key_salt = secrets.token_bytes(32)
        self._auth = TokenProvider(self._config, self._http, headers=self._identity(), clock=clock)
        self.stall_timeout_s = stall_timeout_s
        self.heartbeat_s = heartbeat_s
        self.cancel_grace_s = cancel_grace_s
        self.tool_batch_grace_s = tool_batch_grace_s
        self.exec_heartbeat_s = exec_heartbeat_s
        self._workspace = workspace or self._config.workspace or ""
        self._models: list[ModelInfo] | None = None
        self._sent_models: dict[str, str] = {}  # name asked for -> id sent (catalogue-validated)
        self._models_lock = asyncio.Lock()
        self._server_http2: int | None = None
        self._server_config_done = False
        self._server_config_lock = asyncio.Lock()
        self._prefetched = False
        self._h2: H2Connection | None = None
        self._h2_lock = asyncio.Lock()
        self._h2_unavailable = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.last_channel: str | None = None
        """``"run"`` or ``"runsse"``: the channel kind of the latest turn (diagnostics, tests)."""

    def _http_client(self) -> httpx.AsyncClient:
        tls: dict[str, Any] = {}
        if not (self._base.startswith("https://") or self._rest.startswith("https://")):
            # Every request of this transport goes to these two URLs, so with both on plain http
            # (the emulator, a local proxy) no TLS ever happens, and loading the trust store would
            # cost ~20 ms and ~0.4 MiB at start-up (issue 16). The context given instead trusts no
            # CA at all: anything that did try TLS through it would fail verification, not pass.
            tls["verify"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return httpx.AsyncClient(
            http2=self._base.startswith("https://"),
            timeout=httpx.Timeout(30.0, read=None),
            # No cap on connections: on HTTP/1.1 every RunSSE holds a connection for the whole turn
            # and its BidiAppends need others (connect.md §5.7). With a cap of N, N concurrent turns
            # take every slot and their appends wait forever: a deadlock that surfaces as 30 s stalls.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            **tls,
        )

    # ------------------------------------------------------------------------------------------
    # Transport protocol
    # ------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> TransportCapabilities:
        """Sessions with server-side state, native tools (MCP exec channel), thinking, real usage,
        images, a system prompt."""
        return TransportCapabilities(
            sessions=True, native_tools=True, thinking=True, real_usage=True, images=True, system_prompt=True
        )

    @property
    def auth(self) -> TokenProvider:
        """The token provider (credential source, exchanges)."""
        return self._auth

    async def start(self, *, pool_size: int = 0) -> None:
        """Fetch a token, read the server config, open the HTTP/2 connection if used, load models.

        Sessions are cheap here (client-held state), so ``pool_size`` needs no pre-created ones."""
        self._check_open()
        await self._auth.token()
        await self._server_config()
        if await self._use_h2():
            with contextlib.suppress(NetworkError):
                await self._h2_connection()
        with contextlib.suppress(CursorPipeError):
            await self.list_models()

    async def open_session(self, model: str) -> TransportSession:
        """A new conversation (id, checkpoint, blob store and blob key kept client-side, §5.5)."""
        self._check_open()
        await self._resolve_model(model)
        return ConversationState(model=model)

    async def close_session(self, session: TransportSession) -> None:
        """Forget a conversation's state. Idempotent."""
        if isinstance(session, ConversationState):
            session.closed = True
            session.blobs.clear()
            session.checkpoint = b""

    async def list_models(self) -> list[ModelInfo]:
        """Models the account can use: REST ``/v1/models``, else the ``GetUsableModels`` RPC."""
        self._check_open()
        async with self._models_lock:
            if self._models is None:
                self._models = await self._fetch_models()
            return list(self._models)

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run one turn (see ``transports/base.py`` for the contract)."""
        return self._run(request, session)

    async def aclose(self) -> None:
        """Close the HTTP/2 connection and the httpx client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            # Runs being cancelled in the background (stateless tool turns) get a moment to send
            # their cancel_action, and finished turns to complete their post-turn exchange
            # (live-dialect.md row 10), before the connections go.
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._h2 is not None:
            await self._h2.aclose()
            self._h2 = None
        if self._own_http:
            await self._http.aclose()

    async def idle(self) -> None:
        """Wait until the background work of finished turns is done: the post-turn exchange after
        ``turn_ended`` (live-dialect.md row 10) and runs being cancelled after stateless tool
        calls. Turns never need this (a session turn finishes its exchange before it ends); tests
        and benchmarks use it to see that work complete."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # ------------------------------------------------------------------------------------------
    # headers (connect.md §4)
    # ------------------------------------------------------------------------------------------
    @property
    def wire(self) -> WireProfile:
        """The wire profile turns use now (changes after an automatic dialect switch)."""
        return self._wire

    def _account_fingerprint(self) -> str:
        secret = self._config.api_key.get_secret_value() or self._config.auth_token.get_secret_value()
        raw = f"{self._base}\0{secret}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]

    def _switch_dialect(self, why: str) -> bool:
        """Move to the other dialect after a known rejection, unless the dialect was set
        explicitly; remembered for this account for the rest of the process."""
        if self._dialect_fixed:
            return False
        old = self._wire.dialect
        new = _other(old)
        self._wire = profile_for(new, self._client_version or "")
        self._dialect_fixed = True  # one switch per transport: never ping-pong
        first = _DIALECT_MEMORY.get(self._fingerprint) != new
        _DIALECT_MEMORY[self._fingerprint] = new
        if first:
            log.warning(
                "cursorpipe: %s; switching the connect dialect from %r to %r (identity %s/%s, system "
                "prompt %s) for this account. Set CURSORPIPE_CONNECT_DIALECT to choose one explicitly.",
                why,
                old,
                new,
                self._wire.client_type,
                self._wire.version,
                "as rules only" if self._wire.system_prompt == "rules" else "also as custom_system_prompt",
            )
        return True

    def _identity(self) -> dict[str, str]:
        return {
            "user-agent": USER_AGENT,
            "x-cursor-client-type": self._wire.client_type,
            "x-cursor-client-version": self._wire.version,
            # §4.1: ghost (privacy) mode on unless a privacy lookup says otherwise; we never do the
            # lookup, and `true` is the safe value.
            "x-ghost-mode": "true",
        }

    def _rpc_headers(self, token: str, request_id: str | None = None) -> dict[str, str]:
        headers = self._identity()
        headers.update(
            {
                "authorization": f"Bearer {token}",
                "connect-protocol-version": "1",
                # §3.3: advertise only what we decode (gzip is in the standard library).
                "accept-encoding": "gzip",
                "connect-accept-encoding": "gzip",
                "x-request-id": request_id or str(uuid.uuid4()),
            }
        )
        return headers

    def _run_headers(
        self,
        token: str,
        state: ConversationState,
        run_id: str,
        attempt_id: str,
        *,
        http1: bool,
        tools: bool = False,
    ) -> dict[str, str]:
        headers = self._rpc_headers(token, attempt_id)
        headers["x-original-request-id"] = run_id  # §4.2: stable across retries (= run_id)
        headers["x-blob-encryption-key"] = state.blob_key  # §4.2: constant per conversation
        # live-dialect.md row 7: "" = no built-in tools (a chat bridge must not let Cursor read
        # files or run commands); with the caller's tools the MCP family, which the run needs.
        headers["x-cursor-agent-allowed-tools"] = (
            MCP_ALLOWED_TOOLS if tools and self._wire.mcp_allowed_tools else ""
        )
        if http1:
            headers["x-cursor-streaming"] = "true"  # §4.1: only in HTTP/1.1 fallback mode [X → SDK]
        else:
            # h2 path: we do not decode HTTP-level content-encoding there (Connect compresses
            # per envelope, §3.3).
            headers["accept-encoding"] = "identity"
        return headers

    # ------------------------------------------------------------------------------------------
    # unary calls
    # ------------------------------------------------------------------------------------------
    async def _unary(self, path: str, body: bytes) -> bytes:
        """A unary ``application/proto`` call with one forced re-auth on ``unauthenticated`` (§2.4)."""
        for attempt in range(2):
            token = await self._auth.token()
            request_id = str(uuid.uuid4())
            headers = self._rpc_headers(token, request_id)
            headers["content-type"] = "application/proto"
            with network_errors(f"Could not reach Cursor at {self._base} ({{exc}})."):
                response = await self._http.post(self._base + path, content=body, headers=headers)
            if response.status_code == 200:
                return decode_unary_body(response.content)  # raw or enveloped (live-dialect.md row 23)
            error = parse_unary_error(
                response.status_code, response.content, response.headers.get("content-type", "")
            )
            if error.code == "unauthenticated" and attempt == 0:
                await self._auth.invalidate(token)
                continue
            raise map_connect_error(error, metadata=response.headers, request_id=request_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _server_config(self) -> None:
        """GetServerConfig once (§3.4): its ``http2_config`` may force or forbid HTTP/2 bidi.
        A failure is only logged, like the SDK."""
        if self._server_config_done:
            return
        # A turn may ask while the first turn's prefetch has the call in flight: it waits for the
        # answer instead of deciding without it.
        async with self._server_config_lock:
            if self._server_config_done:
                return
            try:
                raw = await self._unary(SERVER_CONFIG_PATH, b"")
                cfg = sc.GetServerConfigResponse()
                cfg.ParseFromString(raw)
                self._server_http2 = int(cfg.http2_config)
            except Exception as exc:  # optional call, §3.4: a failure is only logged
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.debug("cursorpipe: GetServerConfig failed (%s); using defaults", type(exc).__name__)
            finally:
                self._server_config_done = True  # asked once, answered or not

    async def _use_h2(self) -> bool:
        mode = self._config.use_http2
        if mode == "never" or self._h2_unavailable:
            return False
        if mode == "always":
            return True
        await self._server_config()
        if self._server_http2 in (sc.HTTP2_CONFIG_FORCE_ALL_DISABLED, sc.HTTP2_CONFIG_FORCE_BIDI_DISABLED):
            return False
        if self._server_http2 in (sc.HTTP2_CONFIG_FORCE_ALL_ENABLED, sc.HTTP2_CONFIG_FORCE_BIDI_ENABLED):
            return True
        # §3.4: the SDK uses HTTP/2 bidi for https backends and the HTTP/1.1 fallback for http://.
        return self._base.startswith("https://")

    async def _h2_connection(self) -> H2Connection:
        async with self._h2_lock:
            if self._h2 is None or not self._h2.alive:
                if self._h2 is not None:
                    await self._h2.aclose()
                # The h2 library is imported only on this path (issue 16: the HTTP/1.1 path and
                # processes that never open a turn do not pay for it).
                from ._h2 import H2Connection

                conn = H2Connection(self._base)
                await conn.connect()
                self._h2 = conn
            return self._h2

    # ------------------------------------------------------------------------------------------
    # models
    # ------------------------------------------------------------------------------------------
    async def _fetch_models(self) -> list[ModelInfo]:
        errors: list[CursorPipeError] = []
        api_key = None
        with contextlib.suppress(CursorPipeError):
            api_key = self._auth.api_key
        if api_key:
            # §9.1/§4.6: REST with the raw API key (never the exchanged token).
            headers = self._identity()
            headers["authorization"] = f"Bearer {api_key}"
            try:
                with network_errors(f"GET {MODELS_PATH} failed ({{exc}}).", code="network_error"):
                    response = await self._http.get(self._rest + MODELS_PATH, headers=headers)
                if response.status_code == 200:
                    models = parse_rest_models(response.json())
                    if models:
                        return models
                else:
                    errors.append(
                        map_connect_error(
                            parse_unary_error(
                                response.status_code,
                                response.content,
                                response.headers.get("content-type", ""),
                            ),
                            metadata=response.headers,
                        )
                    )
            except NetworkError as exc:
                errors.append(exc)
            except (ValueError, ProtocolError) as exc:
                errors.append(ProtocolError(f"GET {MODELS_PATH} returned an unreadable model list: {exc}"))
        try:
            raw = await self._unary(USABLE_MODELS_PATH, pb.GetUsableModelsRequest().SerializeToString())
            resp = pb.GetUsableModelsResponse()
            resp.ParseFromString(raw)
            return parse_usable_models(resp)
        except CursorPipeError as exc:
            errors.append(exc)
        except Exception as exc:  # protobuf DecodeError
            errors.append(
                ProtocolError(f"GetUsableModels returned malformed protobuf ({type(exc).__name__}).")
            )
        # The most informative failure: the RPC's (it used the token) unless it was "unimplemented".
        raise errors[-1]

    def _routed_id(self, display_name: str | None) -> str | None:
        """The catalogue id for a ``routed_model`` display name (``"Composer 2"`` ->
        ``composer-2``), so callers see an id they could request; the display name itself when no
        listed model carries it (the update has only a display name, connect.md §7)."""
        if not display_name:
            return None
        low = display_name.lower()
        for m in self._models or ():
            if low in (m.id.lower(), m.display_name.lower()):
                return m.id
        return display_name

    async def _resolve_model(self, name: str, reasoning_effort: str | None = None) -> ModelChoice:
        """The ``RequestedModel`` for ``name`` (family id, alias, sibling or legacy slug, ``auto``,
        optionally ``id[param=value,...]``) with ``reasoning_effort`` mapped to the model's effort
        parameter (live-dialect.md row 14); ``ModelNotFoundError`` when the account cannot use it.

        If the catalogue cannot be fetched at all the name is sent as is (the server's
        ``ERROR_BAD_MODEL_NAME``, or a bare ``resource_exhausted``, still maps to
        ``ModelNotFoundError``)."""
        try:
            models = await self.list_models()
        except CursorPipeError as exc:
            if isinstance(exc, ConfigurationError | AuthenticationError):
                raise
            log.warning("cursorpipe: could not load the model list (%s); not validating %r", exc.code, name)
            return ModelChoice(name)
        choice = choose_model(name, models, reasoning_effort=reasoning_effort)
        if choice is None:
            raise ModelNotFoundError(name, [m.id for m in models], transport=self.name)
        self._sent_models[name] = choice.id
        return choice

    # ------------------------------------------------------------------------------------------
    # the turn
    # ------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(
                "This connect transport is closed.", code="transport_closed", transport=self.name
            )

    async def _open_channel(
        self, token: str, state: ConversationState, run_id: str, attempt_id: str, *, tools: bool = False
    ) -> Channel:
        if await self._use_h2():
            try:
                conn = await self._h2_connection()
                from ._h2 import H2Channel

                return H2Channel(
                    conn, self._run_headers(token, state, run_id, attempt_id, http1=False, tools=tools)
                )
            except NetworkError as exc:
                if self._config.use_http2 == "always" or exc.code != ErrorCode.NO_HTTP2:
                    raise
                if self._base.startswith("https://") and self._server_http2 not in _HTTP2_OFF:
                    # live-dialect.md row 21: Cursor's agent path only serves HTTP/2 (its load
                    # balancer answers HTTP/1.1 with error 464); live peers use HTTP/1.1 only when
                    # GetServerConfig says HTTP/2 is disabled. Falling back here would trade a clear
                    # error for a confusing one, so say what happened.
                    raise NetworkError(
                        f"{self._base} did not negotiate HTTP/2 (ALPN), and Cursor's agent endpoint "
                        "serves the Run stream only over HTTP/2. A proxy that strips HTTP/2 is the "
                        "usual cause; set CURSORPIPE_USE_HTTP2=never to force the HTTP/1.1 RunSSE "
                        "path anyway.",
                        code="no_http2",
                        retryable=False,
                        transport=self.name,
                    ) from exc
                # The server config disabled HTTP/2: remember and use the HTTP/1.1 pair (§3.4).
                self._h2_unavailable = True
        headers = self._run_headers(token, state, run_id, attempt_id, http1=True, tools=tools)
        return Http1Channel(self._http, self._base, headers, attempt_id, token=self._auth.token)

    async def _heartbeats(self, channel: Channel) -> None:
        # §6.4: client_heartbeat every 5 s for the whole stream; a failed send ends the loop (the
        # read side reports the broken stream).
        with contextlib.suppress(CursorPipeError, OSError):
            while True:
                await asyncio.sleep(self.heartbeat_s)
                await channel.send(heartbeat_message())

    def _map(self, exc: ConnectCallError, request: TurnRequest, attempt_id: str) -> CursorPipeError:
        available = [m.id for m in self._models] if self._models else None
        err = map_connect_error(
            exc.error,
            metadata=exc.headers,
            request_id=attempt_id,
            model=request.model,
            sent_model=self._sent_models.get(request.model),
            available_models=available,
            transport=self.name,
        )
        return err

    @staticmethod
    async def _pump(channel: Channel, inbox: asyncio.Queue[object]) -> None:
        """Server messages into ``inbox`` (then ``_EOF``, or the failure): the turn loop can then
        wait for a message and for tool handlers at once without cancelling the stream."""
        try:
            async with aclosing(channel.messages()) as stream:
                async for msg in stream:
                    inbox.put_nowait(msg)
            inbox.put_nowait(_EOF)
        except Exception as exc:  # relayed to the turn loop, which raises it
            inbox.put_nowait(exc)

    async def _answer_tool(
        self,
        channel: Channel,
        handler: ToolHandler,
        exec_id: int,
        call: ToolCall,
        timeout_s: float,
        inbox: asyncio.Queue[object],
    ) -> None:
        """Run the caller's ``tool_handler`` for one native call and send ``mcp_result`` +
        ``stream_close`` (connect.md §6.1), with exec heartbeats every 3 s while it runs (§6.4).
        A handler exception becomes an ``is_error`` result with the redacted exception text; a
        handler slower than ``timeout_s`` puts :class:`ToolResultTimeoutError` in ``inbox`` (the
        turn loop raises it and the run is cancelled)."""

        async def beat() -> None:
            with contextlib.suppress(CursorPipeError, OSError):
                while True:
                    await asyncio.sleep(self.exec_heartbeat_s)
                    await channel.send(exec_heartbeat_message(exec_id))

        beats = asyncio.create_task(beat(), name="cursorpipe-exec-heartbeat")
        try:
            answer = await run_tool_handler(handler, call, timeout_s, transport=self.name)
        except ToolResultTimeoutError as err:
            # The turn loop raises it from the inbox and the run is cancelled.
            inbox.put_nowait(err)
            return
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
        text, is_error = answer.text, answer.is_error
        with contextlib.suppress(CursorPipeError, OSError):
            for reply in mcp_result_messages(exec_id, text, is_error=is_error):
                await channel.send(reply)

    def _tool_usage(self, request: TurnRequest, machine: TurnMachine) -> Usage:
        """Estimated usage of a stateless turn that ended at tool calls (no turn_ended arrives)."""
        inputs = "".join(m.text for m in request.messages)
        inputs += "".join(t.name + t.description + str(t.parameters) for t in request.tools)
        outputs = "".join(c.name + c.arguments for c in machine.tool_calls)
        return Usage(
            input_tokens=estimate_tokens(inputs), output_tokens=estimate_tokens(outputs), estimated=True
        )

    def _stateless_state(self, request: TurnRequest) -> ConversationState:
        """The client-side state of one stateless request: a conversation id stable across the
        requests of one conversation (live-dialect.md row 20) and a blob key derived from it with a
        per-process secret (constant per conversation, connect.md §4.2, never guessable)."""
        base = conversation_id_for(request.messages)
        conversation_id = conversation_id_for(request.messages, self._conversation_salts.get(base, ""))
        key = hmac.new(self._blob_key_salt, conversation_id.encode(), hashlib.sha256).hexdigest()
        state = ConversationState(conversation_id=conversation_id, model=request.model, blob_key=key)
        state.opening = base
        return state

    def _rotate(self, state: ConversationState) -> None:
        """live-dialect.md row 20: a bare ``resource_exhausted`` with zero tokens can mean a
        poisoned conversation; the next request of this conversation uses a fresh id."""
        if not state.opening:
            return
        if len(self._conversation_salts) >= _ROTATE_MAX:
            self._conversation_salts.pop(next(iter(self._conversation_salts)))
        self._conversation_salts[state.opening] = uuid.uuid4().hex
        log.info("cursorpipe: rotating the conversation id after an opaque resource_exhausted")

    def _drop_later(self, channel: Channel) -> None:
        """Stop a run we leave (stateless tool calls) politely without making the caller wait:
        ``cancel_action``, a bounded wait for the server's end, then close, in the background."""

        async def stop() -> None:
            try:
                with contextlib.suppress(CursorPipeError, OSError, TimeoutError):
                    async with asyncio.timeout(min(self.cancel_grace_s, 2.0)):
                        await channel.send(cancel_message())
                await channel.drain(self.cancel_grace_s)
            finally:
                await channel.aclose()

        task = asyncio.create_task(stop(), name="cursorpipe-run-cancel")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, request: TurnRequest, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        turn = await self._plan(request, session)
        yield turn.info
        # The policy across attempts (connect.md §2.4 re-auth, live-dialect.md rows 1-2 dialect
        # switch, §8.3 resume): each failure either earns one more attempt or is raised.
        while True:
            try:
                async with aclosing(_Attempt(self, turn).events()) as events:
                    async for event in events:
                        yield event
                return
            except ConnectCallError as exc:
                mapped = await self._after_call_error(turn, exc)
                if mapped is not None:
                    raise mapped from exc
            except (StreamDroppedError, StreamStalledError) as exc:
                if not self._resume_after(turn, exc):
                    raise

    async def _plan(self, request: TurnRequest, session: TransportSession | None) -> _TurnPlan:
        """Validate the session, resolve the model and fix what every attempt of the turn shares."""
        self._check_open()
        if session is not None and not isinstance(session, ConversationState):
            raise SessionError("This session does not belong to the connect transport.", transport=self.name)
        state = session if session is not None else self._stateless_state(request)
        if state.closed:
            raise SessionError(f"Session {state.id} was discarded; open a new one.", transport=self.name)
        if self._models is None and not self._prefetched:
            self._prefetch()
        model = await self._resolve_model(request.model, request.reasoning_effort)
        return _TurnPlan(
            request=request,
            state=state,
            stateless=session is None,
            model=model,
            # live-dialect.md row 17: a client-level retry of this turn brings the same run_id.
            run_id=request.run_id or str(uuid.uuid4()),
            tools=offered_tools(request),
            # Caller tool-call ids the wire cannot carry (live-dialect.md row 15) map back.
            call_ids={
                normalise_call_id(c.id): c.id
                for m in request.messages
                for c in m.tool_calls
                if normalise_call_id(c.id) != c.id
            },
            system=system_text(request),
            base_checkpoint=state.checkpoint,
            info=TransportInfo(
                transport=self.name, model=request.model, session_id=state.id if session is not None else None
            ),
        )

    def _prefetch(self) -> None:
        """First turn: the model catalogue (REST, with the raw API key) does not depend on the
        token exchange, nor on the server config that follows it (§3.4, when HTTP/2 is ``auto``),
        so those start now and overlap the catalogue's round trip (issue 16 cold start). The
        attempt still asks for both: it joins the calls in flight (one lock each) and a token
        failure is raised there, where the retry policy sees it."""

        async def fetch() -> None:
            with contextlib.suppress(CursorPipeError):
                await self._auth.token()
                if self._config.use_http2 == "auto" and not self._h2_unavailable:
                    await self._server_config()

        self._prefetched = True  # once: a catalogue that cannot load leaves _models unset
        task = asyncio.create_task(fetch(), name="cursorpipe-prefetch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_call_error(self, turn: _TurnPlan, exc: ConnectCallError) -> CursorPipeError | None:
        """``None`` when the turn gets another attempt (one re-auth, one dialect switch, both only
        before any output), else the public error to raise."""
        produced = turn.machine is not None and turn.machine.produced
        if exc.error.code == "unauthenticated" and not turn.reauthed and not produced:
            # §2.4: drop the token, exchange again and re-run the turn once.
            turn.reauthed = True
            await self._auth.invalidate(turn.token)
            return None
        mapped = self._map(exc, turn.request, turn.attempt_id)
        why = _dialect_rejection(exc, mapped)
        if why == _REFUSED_SYSTEM_PROMPT and self._wire.system_prompt != "custom":
            why = None  # we did not send the option: switching would not help
        if why and not turn.switched and not produced and self._switch_dialect(why):
            turn.switched = True
            if turn.stateless:
                turn.state = self._stateless_state(turn.request)
            return None
        if (
            turn.stateless
            and exc.error.code == "resource_exhausted"
            and not exc.error.details
            and not produced
        ):
            self._rotate(turn.state)
        return mapped

    @staticmethod
    def _resume_after(turn: _TurnPlan, exc: StreamDroppedError | StreamStalledError) -> bool:
        """§8.3: once output reached the caller the client cannot retry; resume once from the
        latest checkpoint of this turn with resume_action (same run_id, new request id)."""
        machine = turn.machine
        resumable = machine is not None and machine.produced and machine.checkpoint is not None
        if resumable and turn.resumes < _MAX_RESUMES:
            assert machine is not None
            turn.resumes += 1
            machine.begin_resume()
            log.warning("cursorpipe: %s mid-turn; resuming from the last checkpoint", exc.code)
            return True
        if exc.request_id is None:
            exc.request_id = turn.attempt_id
        return False

    async def _finish_turn(
        self, channel: Channel, machine: TurnMachine, inbox: asyncio.Queue[object]
    ) -> bool:
        """After ``turn_ended``: answer what the server still sends (KV ``set_blob``/``get_blob``,
        the final checkpoint) until its end-stream, at most ``post_turn_guard_s``. True when the
        server ended the stream (a clean close), False when the guard ran out (the stream is
        then dropped). An end-stream error after a completed turn changes nothing for the caller.
        A guard of 0 skips the wait (how the client behaved before, kept for comparison runs)."""
        if self.post_turn_guard_s <= 0:
            return False
        try:
            async with asyncio.timeout(self.post_turn_guard_s):
                while True:
                    item = await inbox.get()
                    if item is _EOF:
                        return True
                    if isinstance(item, BaseException):
                        log.debug("cursorpipe: error after turn_ended ignored (%s)", type(item).__name__)
                        return True
                    assert isinstance(item, pb.AgentServerMessage)
                    step = machine.handle(item)
                    if step.replies:
                        with contextlib.suppress(CursorPipeError, OSError):
                            await channel.send_many(step.replies)
        except TimeoutError:
            log.debug(
                "cursorpipe: no end-stream %g s after turn_ended; dropping the stream", self.post_turn_guard_s
            )
            return False


@dataclass(eq=False)
class _TurnPlan:
    """What the attempts of one turn share, and what the retry policy remembers between them."""

    request: TurnRequest
    state: ConversationState
    stateless: bool
    model: ModelChoice
    run_id: str
    tools: tuple[ToolSpec, ...]
    call_ids: dict[str, str]
    system: str
    base_checkpoint: bytes
    info: TransportInfo
    reauthed: bool = False
    switched: bool = False
    resumes: int = 0
    attempts: int = 0
    machine: TurnMachine | None = None
    token: str = ""
    attempt_id: str = ""

    def next_attempt_id(self) -> str:
        """§4.2: the first request's id is the run id; every retry (ours or the client's) a new one."""
        first = self.attempts == 0 and self.request.attempt == 0
        self.attempts += 1
        self.attempt_id = self.run_id if first else str(uuid.uuid4())
        return self.attempt_id


class _Attempt:
    """One request of a turn on one channel: the run request, heartbeats, the pump of server
    messages, native tool handlers, and the clean-up (close, drop or hand off the channel)."""

    machine: TurnMachine
    channel: Channel

    def __init__(self, transport: ConnectTransport, turn: _TurnPlan) -> None:
        self.t = transport
        self.turn = turn
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self.tool_tasks: dict[int, asyncio.Task[None]] = {}
        self.helpers: list[asyncio.Task[None]] = []
        self.held: list[Event] = []
        self.server_done = False
        self.finished = False
        self.handed_off = False
        self.finishing = False

    def _machine(self) -> TurnMachine:
        turn = self.turn
        if turn.machine is None or turn.resumes == 0:
            turn.machine = TurnMachine(
                turn.state,
                workspace=self.t._workspace,
                tools=turn.tools,
                stateful=turn.request.tool_handler is not None,
                system=turn.system,
                profile=self.t._wire,
                approve_web=self.t._config.approve_web_queries,
                call_ids=turn.call_ids,
            )
        return turn.machine

    async def events(self) -> AsyncGenerator[Event, None]:
        """The attempt's events; raises ``ConnectCallError`` or a stream error for the policy."""
        t, turn = self.t, self.turn
        attempt_id = turn.next_attempt_id()
        resume = turn.resumes > 0
        self.machine = machine = self._machine()
        turn.token = await t._auth.token()
        first = build_run_request(
            turn.request,
            turn.state,
            model_id=turn.model.id,
            model_parameters=turn.model.parameters,
            max_mode=turn.model.max_mode,
            run_id=turn.run_id,
            profile=t._wire,
            stateless=turn.stateless,
            resume=resume,
            checkpoint=machine.checkpoint if resume else turn.base_checkpoint,
        )
        self.channel = channel = await t._open_channel(
            turn.token, turn.state, turn.run_id, attempt_id, tools=bool(turn.tools)
        )
        t.last_channel = channel.kind
        try:
            await channel.start(first)
            self.helpers = [
                asyncio.create_task(t._heartbeats(channel), name="cursorpipe-heartbeat"),
                asyncio.create_task(t._pump(channel, self.inbox), name="cursorpipe-pump"),
            ]
            while not self.finished and (item := await self._next()) is not None:
                for event in await self._handle(item):
                    yield event
            for event in await self._end():
                yield event
        except ConnectCallError:
            self.server_done = True
            raise
        finally:
            await self._close()

    async def _next(self) -> pb.AgentServerMessage | None:
        """The next server message, or ``None`` when the stream ended or a tool batch is complete."""
        batch = self.machine.tool_batch()
        if batch == "complete":
            return None
        if self.inbox.qsize():
            # Most messages are already queued (one socket read carries several): take them
            # without arming a stall timer each time (issue 16 profile).
            return self._accept(self.inbox.get_nowait())
        # While a tool handler runs the server waits for its result and may stay silent: the stall
        # detector pauses (as the SDK's does for human-type waits, §6.4); the handler's own bound
        # (tool_result_timeout_s) applies instead.
        stall = self.t.stall_timeout_s
        wait: float | None = None if any(not k.done() for k in self.tool_tasks.values()) else stall
        if batch == "maybe":
            grace = self.t.tool_batch_grace_s
            wait = min(wait, grace) if wait is not None else grace
        try:
            async with asyncio.timeout(wait):
                item = await self.inbox.get()
        except TimeoutError as exc:
            if batch == "maybe":
                return None
            raise StreamStalledError(
                f"No message from Cursor for {stall:g} s (connect.md §6.4); "
                "the stream is considered stalled.",
                request_id=self.turn.attempt_id,
                transport=self.t.name,
            ) from exc
        return self._accept(item)

    def _accept(self, item: object) -> pb.AgentServerMessage | None:
        if item is _EOF:
            self.server_done = True
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pb.AgentServerMessage)
        return item

    async def _handle(self, item: pb.AgentServerMessage) -> list[Event]:
        t, turn, channel = self.t, self.turn, self.channel
        step = self.machine.handle(item)
        if step.replies:
            await channel.send_many(step.replies)
        for exec_id in step.aborts:
            # exec_server_control_message.abort: the server gave up on this exec.
            task = self.tool_tasks.get(exec_id)
            if task is not None:
                task.cancel()
        handler = turn.request.tool_handler
        if handler is not None:
            # Start the tools before yielding: the consumer may wait on them.
            timeout = turn.request.tool_result_timeout_s or _TOOL_RESULT_TIMEOUT_S
            for exec_id, call in step.tool_calls:
                self.tool_tasks[exec_id] = asyncio.create_task(
                    t._answer_tool(channel, handler, exec_id, call, timeout, self.inbox),
                    name="cursorpipe-tool",
                )
        out: list[Event] = []
        routed = t._routed_id(self.machine.routed_model)
        if routed and routed != turn.info.model:
            # connect.md §7 routed_model: the model Cursor actually routed this turn to (e.g. for
            # ``auto``). A second TransportInfo updates what answered; consumers keep the latest
            # (base.py contract).
            turn.info = replace(turn.info, model=routed)
            out.append(turn.info)
        for event in step.events:
            # The turn's end waits for the post-turn work, see _end.
            (self.held if isinstance(event, TurnEnd) else out).append(event)
        self.finished = step.ended
        return out

    async def _end(self) -> list[Event]:
        t, machine = self.t, self.machine
        if self.finished:
            if t.post_turn_guard_s > 0:
                if self.turn.stateless:
                    self._finish_in_background()
                else:
                    # A session's state must be whole when its turn ends: a caller may export it
                    # at TurnEnd (the team gateway's shared sessions) and the next turn reads it.
                    self.server_done = await t._finish_turn(self.channel, machine, self.inbox)
            return self.held
        if machine.tool_batch() != "none":
            # Stateless (OpenAI-style) tool calls: the turn ends here, the caller runs the tools and
            # sends a new request with the results; the open run is cancelled in the background
            # (no wait on the caller's path).
            self.handed_off = True
            t._drop_later(self.channel)
            usage = t._tool_usage(self.turn.request, machine)
            return [UsageEvent(usage), TurnEnd("tool_calls", usage)]
        raise StreamDroppedError(
            "Stream ended without turn_ended: the connection likely dropped mid-stream (connect.md §7).",
            request_id=self.turn.attempt_id,
            transport=t.name,
        )

    def _finish_in_background(self) -> None:
        """live-dialect.md row 10: the service stores the final checkpoint and blobs after
        ``turn_ended``, then ends the stream; the client must keep answering KV and checkpoint
        messages until that end-stream (bounded by ``post_turn_guard_s``). A stateless request
        keeps none of that state, so the turn's end goes out now and a task owned by the transport
        does that work and then releases the helpers and the channel: a consumer that stops at
        ``TurnEnd`` cannot cut it off, and ``aclose`` waits for it (bounded)."""
        t = self.t

        async def finish() -> None:
            try:
                self.server_done = await t._finish_turn(self.channel, self.machine, self.inbox)
            except Exception as exc:  # nothing above this task to raise to: say so, then drop
                log.warning(
                    "cursorpipe: the post-turn exchange failed (%s); dropping the stream", type(exc).__name__
                )
            finally:
                await self._release()

        task = asyncio.create_task(finish(), name="cursorpipe-post-turn")
        t._tasks.add(task)
        task.add_done_callback(t._tasks.discard)
        self.finishing = True

    async def _close(self) -> None:
        if self.finishing:
            return  # the post-turn task owns the helpers and the channel
        await self._release()

    async def _release(self) -> None:
        helpers = [*self.helpers, *self.tool_tasks.values()]
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if self.handed_off:
            return
        if self.finished or self.server_done:
            await self.channel.aclose()
        else:
            # The caller stopped early (break, aclose, task cancel), a tool handler timed out, or
            # the stream stalled/broke: drop the stream at once, as the SDK's run.cancel() does
            # (live-dialect.md row 11): no cancel_action and no wait on the caller's path.
            await self.channel.abort()
