"""The emulator's ASGI application: Cursor's REST auth, model list, unary Connect RPCs, RunSSE +
BidiAppend and the full-duplex ``Run``, with shared state for faults and request records."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import gzip
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from ..._codecs.connect import (
    CODE_TO_HTTP_STATUS,
    FLAG_COMPRESSED,
    ConnectError,
    EnvelopeDecoder,
    encode_end_stream,
    encode_envelope,
    encode_error_details,
    error_to_json,
)
from ..._proto.agent.v1 import agent_pb2
from ..._proto.aiserver.v1 import aiserver_pb2, server_config_pb2
from ...errors import ProtocolError
from ._behaviour import Behaviour, Fault
from ._turn import RunRecord, TurnIO, run_turn

__all__ = ["EmulatorState", "RecordedRequest", "make_app"]

log = logging.getLogger("cursorpipe.testing.emulator")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY = 32 * 1024 * 1024
#: The errorId OMP saw with the bare resource_exhausted for a sibling slug (live-dialect.md row 14).
SIBLING_SLUG_ERROR_ID = "528384"
#: The account behind the emulator's main API key (the ``sub`` of its tokens: emulator|<account>).
DEFAULT_ACCOUNT = "user_emulated"
_RUN_FAULTS: set[Fault] = {f for f in Fault if f not in (Fault.UNAUTHENTICATED_EXCHANGE, Fault.HTTP_ERROR)}


@dataclass
class RecordedRequest:
    """One HTTP request the emulator received (``Emulator.requests``).

    ``messages`` holds the decoded request message(s): the request of a unary RPC (for a BidiAppend
    the ``BidiAppendRequest`` followed by the ``AgentClientMessage`` it carries), the
    ``BidiRequestId`` of a RunSSE, every ``AgentClientMessage`` of a ``Run`` (appended live).
    ``status`` is the HTTP status sent.
    """

    method: str
    path: str
    http_version: str
    headers: dict[str, str]
    body: bytes = b""
    messages: list[Message] = field(default_factory=list)
    status: int | None = None
    seqno: int | None = None


class _BidiSession:
    """The two halves of one RunSSE + BidiAppend stream, bound by request id (connect.md §5.7)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.queue: asyncio.Queue[agent_pb2.AgentClientMessage | None] = asyncio.Queue()
        self.next_seqno = 0
        self.pending: dict[int, agent_pb2.AgentClientMessage] = {}
        self.attached = False
        self.ended = False
        self.created = time.monotonic()

    def deliver(self, seqno: int, msg: agent_pb2.AgentClientMessage) -> None:
        # Appends are fired concurrently and may arrive out of order: reorder by seqno; a repeated
        # seqno is a retried append and is dropped (official-sdk-as-peer.md §2.3).
        if seqno < self.next_seqno or seqno in self.pending:
            return
        self.pending[seqno] = msg
        while self.next_seqno in self.pending:
            self.queue.put_nowait(self.pending.pop(self.next_seqno))
            self.next_seqno += 1


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class EmulatorState:
    """Everything the app shares: behaviour, credentials, scheduled faults and records."""

    def __init__(self, behaviour: Behaviour, api_key: str, accounts: Mapping[str, str] | None = None) -> None:
        self.behaviour = behaviour
        self.api_key = api_key
        #: API key -> account name (the tokens' ``sub``): the main key and any extra ones, so a
        #: test can tell which caller's credentials each request carried.
        self.accounts = {**(accounts or {}), api_key: DEFAULT_ACCOUNT}
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._faults: collections.deque[tuple[Fault, dict[str, Any]]] = collections.deque()
        self.requests: list[RecordedRequest] = []
        self.runs: list[RunRecord] = []
        self.sessions: dict[str, _BidiSession] = {}
        self.pending_texts: dict[str, str] = {}
        self.live: set[TurnIO] = set()
        self.tokens_issued = 0
        #: conversation ids whose last run lost its final checkpoint (live-dialect.md row 10)
        self.lost_checkpoints: set[str] = set()

    # -- faults ------------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1, **params: Any) -> None:
        with self._lock:
            for _ in range(times):
                self._faults.append((fault, dict(params)))

    def take_fault(self, kinds: set[Fault]) -> tuple[Fault, dict[str, Any]] | None:
        with self._lock:
            for item in list(self._faults):
                if item[0] in kinds:
                    self._faults.remove(item)
                    return item
        return None

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [f for f, _ in self._faults]

    # -- tokens ------------------------------------------------------------------------------
    def issue_token(
        self, kind: str = "api_key_token", lifetime_s: float | None = None, account: str = ""
    ) -> str:
        """A signed JWT: an access token, or with ``kind="refresh_token"`` a refresh token that only
        the exchange accepts (connect.md §2.5; live-dialect.md row 19)."""
        now = time.time()
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "sub": "emulator|" + (account or DEFAULT_ACCOUNT),
            "type": kind,
            "iss": "cursorpipe-emulator",
            "iat": int(now),
            # rounded up: a token is valid for at least the configured lifetime
            "exp": math.ceil(now + (self.behaviour.token_lifetime_s if lifetime_s is None else lifetime_s)),
            "jti": uuid.uuid4().hex,
        }
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
        sig = hmac.new(self._secret, signing.encode(), hashlib.sha256).digest()
        if kind != "refresh_token":
            self.tokens_issued += 1
        return f"{signing}.{_b64url(sig)}"

    def check_token(self, token: str, kind: str = "api_key_token") -> str | None:
        """``None`` if the token is one we issued, of ``kind``, and still valid, else the reason."""
        parts = token.split(".")
        if len(parts) != 3:
            return "not an access token issued by this server"
        signing = f"{parts[0]}.{parts[1]}"
        want = _b64url(hmac.new(self._secret, signing.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, parts[2]):
            return "not an access token issued by this server"
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            return "malformed access token"
        if (payload.get("type") == "refresh_token") != (kind == "refresh_token"):
            return (
                "a refresh token is not an access token" if kind != "refresh_token" else "not a refresh token"
            )
        if float(payload.get("exp", 0)) <= time.time():
            return "access token expired" if kind != "refresh_token" else "refresh token expired"
        return None

    def account_of(self, token: str) -> str | None:
        """The account a token of ours was issued to (``None`` for anything else)."""
        if self.check_token(token) is not None and self.check_token(token, "refresh_token") is not None:
            return None
        payload = token.split(".")[1]
        sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("sub", "")
        return str(sub).removeprefix("emulator|") or None

    def known_model(self, model_id: str) -> bool:
        # Sibling slugs are listed by GetUsableModels, so the permissive variant runs them.
        return any(
            model_id == m.id or model_id in m.aliases or model_id in m.siblings for m in self.behaviour.models
        )

    def model_rejection(
        self, requested: agent_pb2.RequestedModel
    ) -> tuple[ConnectError, Mapping[str, Sequence[str]]] | None:
        """How ``Run`` refuses a per-effort sibling slug (live-dialect.md row 14): a bare
        ``resource_exhausted`` (no ``ErrorDetails``) with errorId 528384 in the end-stream metadata
        [G: the peers report the code and the id, not where the id travels]."""
        if not self.behaviour.reject_sibling_slugs:
            return None
        if any(requested.model_id in m.siblings for m in self.behaviour.models):
            return ConnectError("resource_exhausted", "Error"), {"errorId": [SIBLING_SLUG_ERROR_ID]}
        return None

    def session(self, request_id: str) -> _BidiSession:
        sess = self.sessions.get(request_id)
        if sess is None:
            # Bounded: forget the oldest finished (or abandoned) sessions.
            if len(self.sessions) > 1000:
                for rid, s in sorted(self.sessions.items(), key=lambda kv: kv[1].created)[:200]:
                    if s.ended or not s.attached:
                        del self.sessions[rid]
            sess = self.sessions[request_id] = _BidiSession(request_id)
        return sess

    def close_all(self) -> None:
        """Make every live turn end (used on shutdown)."""
        for io in list(self.live):
            io.disconnected.set()


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        key = k.decode("latin-1").lower()
        val = v.decode("latin-1")
        out[key] = f"{out[key]}, {val}" if key in out else val
    return out


def _bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() != "bearer ":
        return None
    return auth[7:].strip()


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        body = event.get("body", b"")
        size += len(body)
        if size > MAX_BODY:
            raise ProtocolError("request body too large")
        chunks.append(body)
        if not event.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, obj: Any, extra: Sequence[tuple[str, str]] = ()) -> None:
    await _respond(send, status, json.dumps(obj).encode(), "application/json", extra)


async def _unary_error(send: Send, err: ConnectError, extra: Sequence[tuple[str, str]] = ()) -> None:
    await _json(send, CODE_TO_HTTP_STATUS.get(err.code, 500), error_to_json(err), extra)


def make_app(state: EmulatorState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI application serving ``state``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        rec = RecordedRequest(scope["method"], scope["path"], str(scope.get("http_version", "")), headers)
        state.requests.append(rec)
        try:
            await _route(state, scope, receive, send, headers, rec)
        except ProtocolError as exc:
            rec.status = 400
            await _unary_error(send, ConnectError("invalid_argument", str(exc)))

    return app


async def _route(
    state: EmulatorState,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    rec: RecordedRequest,
) -> None:
    method, path = scope["method"], scope["path"]
    if path == "/auth/exchange_user_api_key" and method == "POST":
        await _exchange(state, receive, send, headers, rec)
    elif path == "/v1/models" and method == "GET":
        await _rest_models(state, send, headers, rec)
    elif path == "/agent.v1.AgentService/RunSSE" and method == "POST":
        await _run_sse(state, receive, send, headers, rec)
    elif path == "/agent.v1.AgentService/Run" and method == "POST":
        await _run_bidi(state, receive, send, headers, rec)
    elif path == "/aiserver.v1.BidiService/BidiAppend" and method == "POST":
        await _unary(state, receive, send, headers, rec, aiserver_pb2.BidiAppendRequest, _bidi_append)
    elif path in ("/agent.v1.AgentService/GetUsableModels", "/aiserver.v1.AiService/GetUsableModels"):
        await _unary(state, receive, send, headers, rec, agent_pb2.GetUsableModelsRequest, _usable_models)
    elif path in (
        "/agent.v1.AgentService/GetDefaultModelForCli",
        "/aiserver.v1.AiService/GetDefaultModelForCli",
    ):
        await _unary(
            state, receive, send, headers, rec, agent_pb2.GetDefaultModelForCliRequest, _default_model
        )
    elif path == "/aiserver.v1.ServerConfigService/GetServerConfig":
        await _unary(
            state, receive, send, headers, rec, server_config_pb2.GetServerConfigRequest, _server_config
        )
    elif path == "/aiserver.v1.DashboardService/GetUserPrivacyMode":
        await _unary(
            state, receive, send, headers, rec, server_config_pb2.GetUserPrivacyModeRequest, _privacy
        )
    else:
        # Everything else (analytics, team settings, ...) is optional (official-sdk-as-peer.md §2).
        await _read_body(receive)
        rec.status = 404
        await _json(send, 404, {"code": "unimplemented"})


# -- REST -------------------------------------------------------------------------------------


async def _exchange(
    state: EmulatorState, receive: Receive, send: Send, headers: dict[str, str], rec: RecordedRequest
) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    rec.body = body
    bearer = _bearer(headers) or ""
    # live-dialect.md row 19: a browser login's refresh token is redeemed here too.
    account = state.accounts.get(bearer)
    if account is None and state.check_token(bearer, "refresh_token") is None:
        account = state.account_of(bearer)
    if state.take_fault({Fault.UNAUTHENTICATED_EXCHANGE}) is not None or account is None:
        rec.status = 401
        await _json(send, 401, {"code": "unauthenticated", "message": "Invalid API key"})
        return
    token = state.issue_token(account=account)
    rec.status = 200
    # connect.md §2.2: {"accessToken", "refreshToken"}; the refresh token lives as long as the
    # access token (§2.3) and is accepted only by this endpoint.
    refresh = state.issue_token("refresh_token", account=account)
    await _json(send, 200, {"accessToken": token, "refreshToken": refresh})


async def _rest_models(
    state: EmulatorState, send: Send, headers: dict[str, str], rec: RecordedRequest
) -> None:
    # connect.md §2.7/§9.1: the public REST API takes the raw API key, not the exchanged token.
    if _bearer(headers) not in state.accounts:
        rec.status = 401
        await _json(send, 401, {"error": {"code": "unauthorized", "message": "Invalid API key"}})
        return
    rec.status = 200
    await _json(send, 200, {"items": [m.rest() for m in state.behaviour.models]})


# -- unary Connect ----------------------------------------------------------------------------

UnaryHandler = Callable[[EmulatorState, Any, RecordedRequest, dict[str, str]], Message]


async def _unary(
    state: EmulatorState,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    rec: RecordedRequest,
    req_type: type[Message],
    handler: UnaryHandler,
) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    rec.body = body
    token = _bearer(headers)
    reason = "missing bearer token" if token is None else state.check_token(token)
    if reason is not None:
        rec.status = 401
        await _unary_error(send, ConnectError("unauthenticated", f"Not logged in ({reason})"))
        return
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise ProtocolError("request body is not valid gzip") from exc
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = ctype == "application/json"
    if ctype not in ("application/json", "application/proto"):
        rec.status = 415
        await _respond(send, 415, b"", "text/plain")
        return
    try:
        if is_json:
            msg = json_format.Parse(body.decode("utf-8") or "{}", req_type(), ignore_unknown_fields=True)
        else:
            msg = req_type.FromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        rec.status = 400
        await _unary_error(send, ConnectError("invalid_argument", f"cannot decode request: {exc}"))
        return
    rec.messages.append(msg)
    try:
        resp = handler(state, msg, rec, headers)
    except _UnaryFailure as failure:
        rec.status = CODE_TO_HTTP_STATUS.get(failure.error.code, 500)
        await _unary_error(send, failure.error)
        return
    rec.status = 200
    if is_json:
        out = json_format.MessageToJson(resp, indent=None).encode()
        await _respond(send, 200, out, "application/json")
    elif state.behaviour.envelope_unary:
        # live-dialect.md row 23: the live service may wrap a unary answer in an envelope.
        await _respond(send, 200, encode_envelope(resp.SerializeToString()), "application/proto")
    else:
        await _respond(send, 200, resp.SerializeToString(), "application/proto")


class _UnaryFailure(Exception):
    def __init__(self, error: ConnectError) -> None:
        super().__init__(error.message)
        self.error = error


def _model_details(spec: Any, model_id: str | None = None) -> agent_pb2.ModelDetails:
    slug = model_id or spec.id
    return agent_pb2.ModelDetails(
        model_id=slug,
        display_model_id=slug,
        display_name=spec.display_name if slug == spec.id else f"{spec.display_name} ({slug})",
        display_name_short=spec.display_name,
        aliases=list(spec.aliases) if slug == spec.id else [],
    )


def _usable_models(state: EmulatorState, msg: Any, rec: RecordedRequest, headers: dict[str, str]) -> Message:
    # live-dialect.md row 14: the RPC lists each family *and* its per-effort sibling slugs.
    out = agent_pb2.GetUsableModelsResponse()
    for m in state.behaviour.models:
        out.models.append(_model_details(m))
        out.models.extend(_model_details(m, slug) for slug in m.siblings)
    return out


def _default_model(state: EmulatorState, msg: Any, rec: RecordedRequest, headers: dict[str, str]) -> Message:
    spec = next((m for m in state.behaviour.models if m.id == state.behaviour.default_model), None)
    resp = agent_pb2.GetDefaultModelForCliResponse()
    if spec is not None:
        resp.model.CopyFrom(_model_details(spec))
    return resp


def _server_config(state: EmulatorState, msg: Any, rec: RecordedRequest, headers: dict[str, str]) -> Message:
    resp = server_config_pb2.GetServerConfigResponse()
    if state.behaviour.http2_disabled:
        resp.http2_config = server_config_pb2.HTTP2_CONFIG_FORCE_ALL_DISABLED
    elif state.behaviour.advertise_http2:
        # connect.md §3.4: FORCE_ALL_ENABLED makes the SDK use h2c Run (official-sdk-as-peer.md §6).
        resp.http2_config = server_config_pb2.HTTP2_CONFIG_FORCE_ALL_ENABLED
    return resp


def _privacy(state: EmulatorState, msg: Any, rec: RecordedRequest, headers: dict[str, str]) -> Message:
    return server_config_pb2.GetUserPrivacyModeResponse(
        privacy_mode=server_config_pb2.PRIVACY_MODE_NO_STORAGE
    )


def _bidi_append(state: EmulatorState, msg: Any, rec: RecordedRequest, headers: dict[str, str]) -> Message:
    req: aiserver_pb2.BidiAppendRequest = msg
    if req.data_binary:
        raw = req.data_binary
    else:
        try:
            raw = bytes.fromhex(req.data)
        except ValueError as exc:
            raise _UnaryFailure(ConnectError("invalid_argument", "BidiAppend data is not hex")) from exc
    try:
        client_msg = agent_pb2.AgentClientMessage.FromString(raw)
    except DecodeError as exc:
        raise _UnaryFailure(
            ConnectError("invalid_argument", "BidiAppend data is not an AgentClientMessage")
        ) from exc
    rid = req.request_id.request_id
    if not rid:
        raise _UnaryFailure(ConnectError("invalid_argument", "BidiAppend without request_id"))
    rec.messages.append(client_msg)
    rec.seqno = int(req.append_seqno)
    # Appends for a request id we have not seen yet are buffered until its RunSSE arrives
    # (official-sdk-as-peer.md §2: seqno 0 can beat RunSSE by a millisecond).
    state.session(rid).deliver(int(req.append_seqno), client_msg)
    return aiserver_pb2.BidiAppendResponse()


# -- streaming --------------------------------------------------------------------------------


class _Stream:
    """Writes Connect envelopes of one streaming response (single writer, idempotent end)."""

    def __init__(
        self, send: Send, gzip_frames: bool, content_type: str = "application/connect+proto"
    ) -> None:
        self._send = send
        self._content_type = content_type
        self._gzip = gzip_frames
        self._started = False
        self.ended = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        headers = [(b"content-type", self._content_type.encode())]
        if self._gzip:
            headers.append((b"connect-content-encoding", b"gzip"))
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def message(self, msg: agent_pb2.AgentServerMessage) -> None:
        async with self._lock:
            if self.ended:
                return
            await self._start()
            frame = encode_envelope(msg.SerializeToString(), flags=FLAG_COMPRESSED if self._gzip else 0)
            await self._send({"type": "http.response.body", "body": frame, "more_body": True})

    async def end(self, error: ConnectError | None, metadata: Mapping[str, Sequence[str]] | None) -> None:
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            await self._start()
            frame = encode_end_stream(error, metadata, compress=self._gzip)
            await self._send({"type": "http.response.body", "body": frame, "more_body": False})

    async def raw(self, data: bytes, last: bool) -> None:
        """Write ``data`` as is (the malformed-frame faults); ``last`` ends the response body."""
        async with self._lock:
            if self.ended:
                return
            self.ended = self.ended or last
            await self._start()
            await self._send({"type": "http.response.body", "body": data, "more_body": not last})


def _stream_auth_error(state: EmulatorState, headers: dict[str, str]) -> ConnectError | None:
    token = _bearer(headers)
    reason = "missing bearer token" if token is None else state.check_token(token)
    if reason is None:
        return None
    detail = encode_error_details(
        38, title="Unauthorized request.", detail=f"User is unauthorized ({reason})", is_expected=True
    )
    return ConnectError("unauthenticated", "Error", (detail,))


async def _watch_disconnect(receive: Receive, io: TurnIO) -> None:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            io.disconnected.set()
            await io.inbound.put(None)
            return


async def _serve_turn(
    state: EmulatorState, stream: _Stream, io: TurnIO, rec: RunRecord, reader: asyncio.Task[None]
) -> None:
    state.runs.append(rec)
    state.live.add(io)
    try:
        fault = state.take_fault(_RUN_FAULTS)
        await run_turn(
            io,
            state.behaviour,
            rec,
            fault=fault,
            pending_texts=state.pending_texts,
            known_models=state.known_model,
            lost_checkpoints=state.lost_checkpoints,
            model_rejection=state.model_rejection,
        )
        if not stream.ended and not io.disconnected.is_set():
            await stream.end(None, None)
    finally:
        state.live.discard(io)
        reader.cancel()


async def _http_fault(state: EmulatorState, send: Send, rec: RecordedRequest) -> bool:
    b = state.behaviour
    refuse = b.advertise_http2 and not b.http2_disabled if b.refuse_http1_run is None else b.refuse_http1_run
    if refuse and rec.http_version.startswith("1"):
        # live-dialect.md row 21: the agent path only serves HTTP/2; the load balancer answers an
        # HTTP/1.1 request with a bare 464 (no Connect body).
        rec.status = 464
        await _respond(send, 464, b"", "text/plain")
        return True
    taken = state.take_fault({Fault.HTTP_ERROR})
    if taken is None:
        return False
    params = taken[1]
    rec.status = int(params.get("status", 429))
    extra = [("retry-after", str(params["retry_after"]))] if params.get("retry_after") is not None else []
    await _respond(send, rec.status, b"emulated upstream error", "text/plain", extra)
    return True


async def _run_sse(
    state: EmulatorState, receive: Receive, send: Send, headers: dict[str, str], rec: RecordedRequest
) -> None:
    body = await _read_body(receive)
    if body is None:
        return
    rec.body = body
    if await _http_fault(state, send, rec):
        return
    stream = _Stream(send, state.behaviour.gzip_frames, state.behaviour.runsse_content_type)
    rec.status = 200
    auth_error = _stream_auth_error(state, headers)
    if auth_error is not None:
        await stream.end(auth_error, None)
        return
    try:
        dec = EnvelopeDecoder()
        frames = dec.feed(body)
        dec.close()
        if len(frames) != 1 or frames[0].is_end_stream:
            raise ProtocolError("RunSSE expects exactly one BidiRequestId envelope")
        rid_msg = aiserver_pb2.BidiRequestId.FromString(frames[0].payload)
    except (ProtocolError, DecodeError) as exc:
        await stream.end(ConnectError("invalid_argument", f"bad RunSSE request: {exc}"), None)
        return
    rec.messages.append(rid_msg)
    rid = rid_msg.request_id
    session = state.session(rid)
    if session.attached:
        await stream.end(ConnectError("already_exists", f"a RunSSE stream for {rid!r} is already open"), None)
        return
    session.attached = True
    await stream.start()
    io = TurnIO(send=stream.message, end=stream.end, inbound=session.queue, raw=stream.raw)
    run = RunRecord(transport="runsse", request_id=rid, headers=dict(headers))
    reader = asyncio.create_task(_watch_disconnect(receive, io))
    try:
        await _serve_turn(state, stream, io, run, reader)
    finally:
        session.ended = True


async def _run_bidi(
    state: EmulatorState, receive: Receive, send: Send, headers: dict[str, str], rec: RecordedRequest
) -> None:
    if await _http_fault(state, send, rec):
        return
    stream = _Stream(send, state.behaviour.gzip_frames)
    rec.status = 200
    auth_error = _stream_auth_error(state, headers)
    queue: asyncio.Queue[agent_pb2.AgentClientMessage | None] = asyncio.Queue()
    io = TurnIO(send=stream.message, end=stream.end, inbound=queue, raw=stream.raw)
    run = RunRecord(transport="run", request_id=headers.get("x-request-id", ""), headers=dict(headers))
    bad_input: list[str] = []

    async def read_requests() -> None:
        dec = EnvelopeDecoder()
        body_done = False
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                io.disconnected.set()
                await queue.put(None)
                return
            if body_done:
                continue
            try:
                for frame in dec.feed(event.get("body", b"")):
                    if frame.is_end_stream:
                        raise ProtocolError("clients never send end-stream frames (connect.md §3.1)")
                    msg = agent_pb2.AgentClientMessage.FromString(frame.payload)
                    rec.messages.append(msg)
                    await queue.put(msg)
                if not event.get("more_body", False):
                    body_done = True
                    dec.close()
                    await queue.put(None)  # the client half-closed its side
            except (ProtocolError, DecodeError) as exc:
                bad_input.append(str(exc))
                body_done = True
                io.disconnected.set()  # stops the turn; the error is reported below
                await queue.put(None)

    reader = asyncio.create_task(read_requests())
    if auth_error is not None:
        try:
            await stream.end(auth_error, None)
        finally:
            reader.cancel()
        return
    await stream.start()
    await _serve_turn(state, stream, io, run, reader)
    if bad_input and not stream.ended:
        run.outcome = "error:invalid_argument"
        await stream.end(ConnectError("invalid_argument", f"malformed request stream: {bad_input[0]}"), None)
