"""A raw, minimal Connect client for one agent turn: the floor the real transport is measured
against (bench/) and an independent way to drive the emulator in tests.

Two variants: :func:`raw_turn_sse` (``RunSSE`` + ``BidiAppend`` on httpx, connect.md §5.7) and
:func:`raw_turn_h2` (full-duplex ``Run`` over h2c with the ``h2`` library, connect.md §5.6). Both
answer KV requests from an in-memory blob store, the request-context exec with a minimal context,
decline every other exec (throw + stream_close) and reject interaction queries — the minimal client
checklist of connect.md §10. No retries, no heartbeats (turns are short), no token refresh.

Tools (issue 7): pass ``tools`` (``McpToolDefinition``s, see ``mcp_tool_definition``) to offer them
in ``AgentRunRequest.mcp_tools`` and ``tool_handlers`` (name → ``(arguments) -> str | McpResult``) to
answer the model's ``mcp_args`` execs with ``exec_client_message{id, mcp_result}`` + ``stream_close``:
a string becomes ``McpResult.success`` with one text item, an exception ``McpResult.error``, a tool
without handler ``McpResult.tool_not_found`` (with ``tool_handlers=None``, the default, ``mcp_args`` is
declined with ``throw`` like every other exec). ``answer_tools=False`` leaves every ``mcp_args`` exec
unanswered (to see the emulator's bounded wait). ``conversation_history`` / ``trailing_history`` fill
``UserMessageAction.conversation_history`` / ``trailing_conversation_history`` (the old stateless
variant, which the strict emulator ignores).

The live dialect (issue 11, live-dialect.md rows 1-24) is the default: identity
``x-cursor-client-type: cli`` with a recent ``cli-YYYY.MM.DD-<hash>`` version (:data:`RAW_CLI_IDENTITY`);
``system_prompt`` as a global rule and ``cloud_rule`` in the request-context reply plus a
``{"role": "system"}`` prompt message; ``prompt_messages`` (JSON objects ``{"role", "content"}``)
stored as blobs whose SHA-256 ids go in ``root_prompt_messages_json``; tools in ``mcp_tools`` and the
request-context reply, the MCP family in ``x-cursor-agent-allowed-tools`` (``""`` without tools),
AGENT mode with tools (ASK without), ``mcp_state_exec_args`` answered with a connected server
listing them; web search and web fetch approved, other interaction queries rejected, unknown ones
answered under their field number. Each choice has a parameter to send the old variant instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

import httpx
from google.protobuf import json_format

from ..._codecs.connect import EndStream, EnvelopeDecoder, encode_envelope
from ..._proto.agent.v1 import agent_pb2
from ..._proto.aiserver.v1 import aiserver_pb2
from ._view import MCP_TOOL_FAMILY

__all__ = [
    "RAW_CLI_IDENTITY",
    "RawTurn",
    "RawTurnOptions",
    "ToolHandler",
    "build_run_request",
    "exchange_token",
    "prompt_blob",
    "raw_turn_h2",
    "raw_turn_sse",
]

#: ``(x-cursor-client-type, x-cursor-client-version)`` the raw client sends by default: the ``cli``
#: identity of the live-tested peers (live-dialect.md row 1), a build recent enough for the emulator.
RAW_CLI_IDENTITY = ("cli", "cli-2026.09.02-c22c1a3")

#: The allowed-tools value of the live-tested peers when tools are offered (row 7).
_MCP_FAMILY = ",".join(MCP_TOOL_FAMILY)

#: Answers one tool call: receives the decoded arguments, returns the result text or a full McpResult.
ToolHandler = Callable[[dict[str, Any]], "str | agent_pb2.McpResult"]


@dataclass
class RawTurn:
    """What one raw turn produced."""

    text: str = ""
    thinking: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    turn_ended: bool = False
    checkpoint: agent_pb2.ConversationStateStructure | None = None
    end: EndStream | None = None
    server_messages: list[agent_pb2.AgentServerMessage] = field(default_factory=list)
    sent: list[agent_pb2.AgentClientMessage] = field(default_factory=list)
    gzip_frames: int = 0
    first_token_s: float | None = None
    #: seconds since the start of the turn at which each text delta arrived
    delta_times: list[float] = field(default_factory=list)
    #: the ``mcp_args`` of every tool exec the server sent, in order
    tool_calls: list[agent_pb2.McpArgs] = field(default_factory=list)
    #: call_id → the concatenated ``args_text_delta``s of its ``partial_tool_call`` updates
    tool_args_text: dict[str, str] = field(default_factory=dict)
    #: the tool-call updates (``partial_tool_call``, ``tool_call_started``, ``tool_call_completed``)
    tool_updates: list[agent_pb2.InteractionUpdate] = field(default_factory=list)
    #: exec ids the server aborted (``exec_server_control_message.abort``)
    aborted_execs: list[int] = field(default_factory=list)
    #: the kinds of interaction query the server asked (``InteractionQuery`` case names)
    queries: list[str] = field(default_factory=list)
    #: the raw client reset the stream right after ``turn_ended`` (``reset_after_turn_ended``)
    reset: bool = False


def prompt_blob(message: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """``(blob_id, blob_bytes)`` of one prompt message: compact JSON, id = its SHA-256 (row 4)."""
    data = json.dumps(dict(message), separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).digest(), data


def build_run_request(
    text: str,
    *,
    model: str = "composer-2",
    conversation_id: str | None = None,
    checkpoint: agent_pb2.ConversationStateStructure | None = None,
    run_id: str | None = None,
    tools: Sequence[agent_pb2.McpToolDefinition] = (),
    conversation_history: Sequence[agent_pb2.ConversationHistoryMessage] = (),
    trailing_history: Sequence[agent_pb2.ConversationHistoryMessage] = (),
    root_ids: Sequence[bytes] | None = None,
    mode: int | None = None,
) -> agent_pb2.AgentClientMessage:
    """An ``AgentClientMessage.run_request`` as the SDK builds it (agent-v1-minimal.md §9), with the
    given tools in ``mcp_tools``, the given history messages, ``root_ids`` as
    ``root_prompt_messages_json`` (replacing the checkpoint's) and ``mode`` (``None``: AGENT with
    tools, ASK without, live-dialect.md row 8)."""
    msg = agent_pb2.AgentClientMessage()
    r = msg.run_request
    if checkpoint is not None:
        r.conversation_state.CopyFrom(checkpoint)
    else:
        r.conversation_state.SetInParent()
    if root_ids is not None:
        del r.conversation_state.root_prompt_messages_json[:]
        r.conversation_state.root_prompt_messages_json.extend(root_ids)
    r.action.user_message_action.user_message.text = text
    if mode is None:
        mode = agent_pb2.AGENT_MODE_AGENT if tools else agent_pb2.AGENT_MODE_ASK
    r.action.user_message_action.user_message.mode = mode  # type: ignore[assignment]
    r.requested_model.model_id = model
    r.mcp_tools.SetInParent()
    r.mcp_tools.mcp_tools.extend(tools)
    action = r.action.user_message_action
    if conversation_history:
        action.conversation_history.messages.extend(conversation_history)
    if trailing_history:
        action.trailing_conversation_history.messages.extend(trailing_history)
    r.conversation_id = conversation_id or str(uuid.uuid4())
    r.run_id = run_id or str(uuid.uuid4())
    r.next_interaction_query_id = 0
    return msg


async def exchange_token(client: httpx.AsyncClient, base_url: str, api_key: str) -> str:
    """``POST /auth/exchange_user_api_key`` (connect.md §2.2); returns the access token."""
    resp = await client.post(
        f"{base_url}/auth/exchange_user_api_key", headers={"authorization": f"Bearer {api_key}"}, json={}
    )
    resp.raise_for_status()
    return str(resp.json()["accessToken"])


@dataclass
class _Dialect:
    """The choices where the live dialect and older variants differ (see the module docstring)."""

    tools: Sequence[agent_pb2.McpToolDefinition] = ()
    system_prompt: str | None = None
    tools_in_request_context: bool = True
    mcp_state: bool = True
    approve_web: bool = True
    query_answer: Callable[[agent_pb2.InteractionQuery], agent_pb2.InteractionResponse] | None = None


class RawTurnOptions(TypedDict, total=False):
    """Keyword options shared by :func:`raw_turn_sse` and :func:`raw_turn_h2` (described in the
    module docstring and :func:`raw_turn_h2`)."""

    model: str
    blobs: dict[bytes, bytes] | None
    checkpoint: agent_pb2.ConversationStateStructure | None
    conversation_id: str | None
    token: str | None
    mutate_first: Callable[[agent_pb2.AgentClientMessage], None] | None
    io_timeout: float
    tools: Sequence[agent_pb2.McpToolDefinition]
    tool_handlers: Mapping[str, ToolHandler] | None
    answer_tools: bool
    conversation_history: Sequence[agent_pb2.ConversationHistoryMessage]
    trailing_history: Sequence[agent_pb2.ConversationHistoryMessage]
    system_prompt: str | None
    prompt_messages: Sequence[Mapping[str, Any]] | None
    identity: tuple[str, str] | None
    allowed_tools: str | None
    mode: int | None
    tools_in_run_request: bool
    tools_in_request_context: bool
    mcp_state: bool
    approve_web: bool
    reset_after_turn_ended: bool
    query_answer: Callable[[agent_pb2.InteractionQuery], agent_pb2.InteractionResponse] | None


@dataclass
class _Options:
    """:class:`RawTurnOptions` with their defaults (the live dialect)."""

    model: str = "composer-2"
    blobs: dict[bytes, bytes] | None = None
    checkpoint: agent_pb2.ConversationStateStructure | None = None
    conversation_id: str | None = None
    token: str | None = None
    mutate_first: Callable[[agent_pb2.AgentClientMessage], None] | None = None
    io_timeout: float = 30.0
    tools: Sequence[agent_pb2.McpToolDefinition] = ()
    tool_handlers: Mapping[str, ToolHandler] | None = None
    answer_tools: bool = True
    conversation_history: Sequence[agent_pb2.ConversationHistoryMessage] = ()
    trailing_history: Sequence[agent_pb2.ConversationHistoryMessage] = ()
    system_prompt: str | None = None
    prompt_messages: Sequence[Mapping[str, Any]] | None = None
    identity: tuple[str, str] | None = RAW_CLI_IDENTITY
    allowed_tools: str | None = "auto"
    mode: int | None = None
    tools_in_run_request: bool = True
    tools_in_request_context: bool = True
    mcp_state: bool = True
    approve_web: bool = True
    reset_after_turn_ended: bool = False
    query_answer: Callable[[agent_pb2.InteractionQuery], agent_pb2.InteractionResponse] | None = None

    def headers(self) -> dict[str, str]:
        return _dialect_headers(self.identity, self.allowed_tools, self.tools)

    def start(
        self, text: str, run_id: str, result: RawTurn, blobs: dict[bytes, bytes]
    ) -> tuple[agent_pb2.AgentClientMessage, _Answerer]:
        """The first message (after ``mutate_first``) and the answerer of a turn."""
        first = build_run_request(
            text,
            model=self.model,
            checkpoint=self.checkpoint,
            conversation_id=self.conversation_id,
            run_id=run_id,
            tools=self.tools if self.tools_in_run_request else (),
            conversation_history=self.conversation_history,
            trailing_history=self.trailing_history,
            root_ids=_store_roots(blobs, self.system_prompt, self.prompt_messages),
            mode=self.mode if self.mode is not None else _default_mode(self.tools),
        )
        if self.mutate_first is not None:
            self.mutate_first(first)
        dialect = _Dialect(
            self.tools,
            self.system_prompt,
            self.tools_in_request_context,
            self.mcp_state,
            self.approve_web,
            self.query_answer,
        )
        started = asyncio.get_running_loop().time()
        answerer = _Answerer(blobs, result, started, self.tool_handlers, self.answer_tools, dialect)
        return first, answerer


class _Answerer:
    """Turns server messages into the client messages a minimal chat client sends back."""

    def __init__(
        self,
        blobs: dict[bytes, bytes],
        result: RawTurn,
        started: float,
        tool_handlers: Mapping[str, ToolHandler] | None = None,
        answer_tools: bool = True,
        dialect: _Dialect | None = None,
    ) -> None:
        self.blobs = blobs
        self.result = result
        self.started = started
        self.tool_handlers = None if tool_handlers is None else dict(tool_handlers)
        self.answer_tools = answer_tools
        self.dialect = dialect or _Dialect()

    def _request_context(self, ctx: agent_pb2.RequestContext) -> None:
        ctx.env.os_version = "linux emulated"
        ctx.env.time_zone = "UTC"
        d = self.dialect
        if d.system_prompt:
            # live-dialect.md row 2: a global rule plus the cloud rule carry the system prompt.
            rule = ctx.rules.add(full_path="system-prompt", content=d.system_prompt)
            getattr(rule.type, "global").SetInParent()
            ctx.cloud_rule = d.system_prompt
        ctx.mcp_meta_tool_options.enabled = True
        if d.tools and d.tools_in_request_context:
            ctx.tools.extend(d.tools)
            for provider in sorted({t.provider_identifier for t in d.tools}):
                names = ", ".join(t.tool_name or t.name for t in d.tools if t.provider_identifier == provider)
                ctx.mcp_instructions.add(
                    server_name=provider, server_identifier=provider, instructions=f"Tools: {names}"
                )

    def _mcp_state(self, result: agent_pb2.McpStateExecResult) -> None:
        success = result.success
        success.SetInParent()
        for provider in sorted({t.provider_identifier for t in self.dialect.tools}):
            server = success.servers.add(server_name=provider, server_identifier=provider, status="connected")
            server.tools.extend(t for t in self.dialect.tools if t.provider_identifier == provider)

    def _mcp_result(self, args: agent_pb2.McpArgs) -> agent_pb2.McpResult:
        handlers = self.tool_handlers or {}
        handler = handlers.get(args.name) or handlers.get(args.tool_name)
        result = agent_pb2.McpResult()
        if handler is None:
            result.tool_not_found.name = args.name
            result.tool_not_found.available_tools.extend(sorted(handlers))
            return result
        arguments = {k: json_format.MessageToDict(v) for k, v in args.args.items()}
        try:
            out = handler(arguments)
        except Exception as exc:  # a failing tool is a tool error, reported to the model
            result.error.error = f"{type(exc).__name__}: {exc}"
            return result
        if isinstance(out, agent_pb2.McpResult):
            return out
        result.success.content.add().text.text = str(out)
        return result

    def handle(self, msg: agent_pb2.AgentServerMessage) -> list[agent_pb2.AgentClientMessage]:
        """Record one server message and return the client messages that answer it (if any)."""
        self.result.server_messages.append(msg)
        case = msg.WhichOneof("message")
        if case == "interaction_update":
            self._update(msg.interaction_update)
        elif case == "conversation_checkpoint_update":
            self.result.checkpoint = msg.conversation_checkpoint_update
        elif case == "kv_server_message":
            return [self._kv(msg.kv_server_message)]
        elif case == "exec_server_control_message":
            self.result.aborted_execs.append(msg.exec_server_control_message.abort.id)
        elif case == "exec_server_message":
            return self._exec(msg.exec_server_message)
        elif case == "interaction_query":
            return [self._query(msg.interaction_query)]
        return []

    def _update(self, u: agent_pb2.InteractionUpdate) -> None:
        which = u.WhichOneof("message")
        if which == "text_delta":
            now = asyncio.get_running_loop().time() - self.started
            if self.result.first_token_s is None:
                self.result.first_token_s = now
            self.result.delta_times.append(now)
            self.result.text += u.text_delta.text
        elif which == "thinking_delta":
            self.result.thinking += u.thinking_delta.text
        elif which in ("partial_tool_call", "tool_call_started", "tool_call_completed"):
            self.result.tool_updates.append(u)
            if which == "partial_tool_call":
                p = u.partial_tool_call
                self.result.tool_args_text[p.call_id] = (
                    self.result.tool_args_text.get(p.call_id, "") + p.args_text_delta
                )
        elif which == "turn_ended":
            self.result.turn_ended = True
            te = u.turn_ended
            self.result.usage = {
                k: int(getattr(te, k))
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "reasoning_tokens",
                )
                if te.HasField(k)
            }

    def _kv(self, kv: agent_pb2.KvServerMessage) -> agent_pb2.AgentClientMessage:
        reply = agent_pb2.AgentClientMessage()
        reply.kv_client_message.id = kv.id
        if kv.WhichOneof("message") == "set_blob_args":
            self.blobs[kv.set_blob_args.blob_id] = kv.set_blob_args.blob_data
            reply.kv_client_message.set_blob_result.SetInParent()
        else:
            res = reply.kv_client_message.get_blob_result
            res.SetInParent()
            data = self.blobs.get(kv.get_blob_args.blob_id)
            if data is not None:
                res.blob_data = data
        return reply

    def _exec(self, ex: agent_pb2.ExecServerMessage) -> list[agent_pb2.AgentClientMessage]:
        """The answer to one exec followed by its ``stream_close`` (connect.md §10); nothing at all
        for a tool call left unanswered on purpose (``answer_tools=False``)."""
        reply = agent_pb2.AgentClientMessage()
        which = ex.WhichOneof("message")
        if which == "mcp_args" and self.tool_handlers is not None:
            self.result.tool_calls.append(ex.mcp_args)
            if not self.answer_tools:
                return []
            reply.exec_client_message.id = ex.id
            reply.exec_client_message.mcp_result.CopyFrom(self._mcp_result(ex.mcp_args))
        elif which == "request_context_args":
            reply.exec_client_message.id = ex.id
            self._request_context(reply.exec_client_message.request_context_result.success.request_context)
        elif which == "mcp_state_exec_args" and self.dialect.mcp_state:
            reply.exec_client_message.id = ex.id
            self._mcp_state(reply.exec_client_message.mcp_state_exec_result)
        else:
            reply.exec_client_control_message.throw.id = ex.id
            reply.exec_client_control_message.throw.error = "not supported by the raw client"
        close = agent_pb2.AgentClientMessage()
        close.exec_client_control_message.stream_close.id = ex.id
        return [reply, close]

    def _query(self, q: agent_pb2.InteractionQuery) -> agent_pb2.AgentClientMessage:
        reply = agent_pb2.AgentClientMessage()
        resp = reply.interaction_response
        resp.id = q.id
        query_case: str | None = q.WhichOneof("query")
        self.result.queries.append(query_case or "unknown")
        if self.dialect.query_answer is not None:
            resp.CopyFrom(self.dialect.query_answer(q))
        elif query_case is None:
            # A case outside the schema: an approved-shaped (empty) reply under the same field
            # number, so the stream never hangs (live-dialect.md row 12).
            for number in _top_level_fields(q.SerializeToString()):
                if number != 1:
                    resp.MergeFromString(_ld(number, b""))
        else:
            number = q.DESCRIPTOR.fields_by_name[query_case].number
            target = resp.DESCRIPTOR.oneofs_by_name["result"]
            field_name = next(f.name for f in target.fields if f.number == number)
            approve = self.dialect.approve_web and query_case in (
                "web_search_request_query",
                "web_fetch_request_query",
            )
            _answer_query(getattr(resp, field_name), approve)
        return reply


async def raw_turn_sse(base_url: str, api_key: str, text: str, **options: Unpack[RawTurnOptions]) -> RawTurn:
    """One turn over ``RunSSE`` + ``BidiAppend`` (connect.md §5.7). The dialect parameters are
    described in the module docstring and :func:`raw_turn_h2`."""
    opts = _Options(**options)
    blobs = {} if opts.blobs is None else opts.blobs
    result = RawTurn()
    async with httpx.AsyncClient(timeout=opts.io_timeout) as client:
        token = opts.token or await exchange_token(client, base_url, api_key)
        request_id = str(uuid.uuid4())
        headers = {
            "authorization": f"Bearer {token}",
            "connect-protocol-version": "1",
            "x-request-id": request_id,
            "x-cursor-streaming": "true",
            **opts.headers(),
        }
        seq = 0

        async def append(msg: agent_pb2.AgentClientMessage) -> None:
            nonlocal seq
            result.sent.append(msg)
            body = aiserver_pb2.BidiAppendRequest(
                data=msg.SerializeToString().hex(),
                request_id=aiserver_pb2.BidiRequestId(request_id=request_id),
                append_seqno=seq,
            )
            seq += 1
            resp = await client.post(
                f"{base_url}/aiserver.v1.BidiService/BidiAppend",
                content=body.SerializeToString(),
                headers={**headers, "content-type": "application/proto"},
            )
            resp.raise_for_status()

        first, answerer = opts.start(text, request_id, result, blobs)
        await append(first)  # before RunSSE on purpose: the server must buffer it
        rid = aiserver_pb2.BidiRequestId(request_id=request_id).SerializeToString()
        async with client.stream(
            "POST",
            f"{base_url}/agent.v1.AgentService/RunSSE",
            content=encode_envelope(rid),
            headers={**headers, "content-type": "application/connect+proto"},
        ) as resp:
            resp.raise_for_status()
            dec = EnvelopeDecoder()
            async for chunk in resp.aiter_raw():
                for frame in dec.feed(chunk):
                    if frame.end_stream is not None:
                        result.end = frame.end_stream
                        break
                    result.gzip_frames += frame.compressed
                    for reply in answerer.handle(agent_pb2.AgentServerMessage.FromString(frame.payload)):
                        await append(reply)
                    if opts.reset_after_turn_ended and result.turn_ended:
                        result.reset = True
                        break
                if result.reset or result.end is not None:
                    break
            if not result.reset:
                dec.close()
    return result


async def raw_turn_h2(
    base_url: str,
    api_key: str,
    text: str,
    *,
    extra_messages: list[agent_pb2.AgentClientMessage] | None = None,
    **options: Unpack[RawTurnOptions],
) -> RawTurn:
    """One turn over the full-duplex ``Run`` RPC on h2c prior knowledge (connect.md §5.6).

    Dialect parameters (live dialect by default, live-dialect.md rows 1-12): ``system_prompt``
    (rule + cloud rule + system prompt message); ``prompt_messages`` (earlier messages as
    ``{"role", "content"}`` objects, stored as blobs named in ``root_prompt_messages_json``; with a
    ``checkpoint`` they replace its roots); ``identity`` (``(client type, version)`` headers,
    ``None`` for none); ``allowed_tools`` (``"auto"``: the MCP family with tools, ``""`` without;
    ``None`` omits the header); ``mode`` (``None``: AGENT with tools, ASK without);
    ``tools_in_run_request`` / ``tools_in_request_context`` (where ``tools`` are offered);
    ``mcp_state`` (answer ``mcp_state_exec_args``, else decline it); ``approve_web`` (approve web
    search/fetch queries); ``query_answer`` (build every interaction response yourself);
    ``reset_after_turn_ended`` (drop the stream right after
    ``turn_ended``, as clients did before issue 11)."""
    import h2.config
    import h2.connection

    opts = _Options(**options)
    io_timeout = opts.io_timeout
    blobs = {} if opts.blobs is None else opts.blobs
    result = RawTurn()
    token = opts.token
    if token is None:
        async with httpx.AsyncClient(timeout=io_timeout) as client:
            token = await exchange_token(client, base_url, api_key)
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    conn: Any = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    run_id = str(uuid.uuid4())
    conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"{host}:{port}"),
            (":path", "/agent.v1.AgentService/Run"),
            ("content-type", "application/connect+proto"),
            ("connect-protocol-version", "1"),
            ("authorization", f"Bearer {token}"),
            ("x-request-id", run_id),
            *opts.headers().items(),
        ],
    )
    first, answerer = opts.start(text, run_id, result, blobs)
    turn = _H2Turn(conn, sid, result, answerer, opts.reset_after_turn_ended)
    turn.send(first)
    for extra in extra_messages or []:
        turn.send(extra)
    writer.write(conn.data_to_send())
    await writer.drain()
    try:
        half_closed = False
        while not turn.done:
            data = await asyncio.wait_for(reader.read(65536), io_timeout)
            if not data:
                break
            turn.feed(data)
            if result.end is not None and not half_closed and not turn.done:
                half_closed = True
                conn.end_stream(sid)
            writer.write(conn.data_to_send())
            await writer.drain()
        if turn.status not in (None, "200"):
            raise RuntimeError(f"Run answered HTTP {turn.status}")
    finally:
        conn.close_connection()
        writer.write(conn.data_to_send())
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return result


@dataclass
class _H2Turn:
    """The stream side of one :func:`raw_turn_h2` turn: h2 events in, Connect frames to the
    answerer, its replies out on the same stream."""

    conn: Any
    sid: int
    result: RawTurn
    answerer: _Answerer
    reset_after_turn_ended: bool
    dec: EnvelopeDecoder = field(default_factory=EnvelopeDecoder)
    status: str | None = None
    #: the stream ended, was reset by the server, or was reset here after ``turn_ended``
    done: bool = False

    def send(self, msg: agent_pb2.AgentClientMessage) -> None:
        self.result.sent.append(msg)
        self.conn.send_data(self.sid, encode_envelope(msg.SerializeToString()))

    def feed(self, data: bytes) -> None:
        """Process the h2 events in ``data`` (the caller flushes ``conn.data_to_send()``)."""
        import h2.events

        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.status = (
                    dict((bytes(k), bytes(v)) for k, v in event.headers).get(b":status", b"").decode()
                )
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == self.sid:
                self.conn.acknowledge_received_data(event.flow_controlled_length, self.sid)
                if self.status == "200":  # an HTTP-level error body is not Connect envelopes
                    self._frames(event.data)
            elif (
                isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                and event.stream_id == self.sid
            ):
                self.done = True

    def _frames(self, data: bytes) -> None:
        for frame in self.dec.feed(data):
            if frame.end_stream is not None:
                self.result.end = frame.end_stream
                continue
            self.result.gzip_frames += frame.compressed
            for reply in self.answerer.handle(agent_pb2.AgentServerMessage.FromString(frame.payload)):
                self.send(reply)
            if self.reset_after_turn_ended and self.result.turn_ended and not self.result.reset:
                self.result.reset = True
                self.conn.reset_stream(self.sid)
                self.done = True
                return


def _dialect_headers(
    identity: tuple[str, str] | None, allowed_tools: str | None, tools: Sequence[agent_pb2.McpToolDefinition]
) -> dict[str, str]:
    out: dict[str, str] = {}
    if identity is not None:
        out["x-cursor-client-type"], out["x-cursor-client-version"] = identity
    if allowed_tools == "auto":
        out["x-cursor-agent-allowed-tools"] = _MCP_FAMILY if tools else ""
    elif allowed_tools is not None:
        out["x-cursor-agent-allowed-tools"] = allowed_tools
    return out


def _default_mode(tools: Sequence[agent_pb2.McpToolDefinition]) -> int:
    return int(agent_pb2.AGENT_MODE_AGENT if tools else agent_pb2.AGENT_MODE_ASK)


def _store_roots(
    blobs: dict[bytes, bytes], system_prompt: str | None, messages: Sequence[Mapping[str, Any]] | None
) -> list[bytes] | None:
    """Store the prompt messages (a system entry first) and return their ids, or ``None`` when the
    caller gave neither (the checkpoint's roots, if any, stay)."""
    if system_prompt is None and messages is None:
        return None
    entries = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(messages or ())
    ids = []
    for entry in entries:
        bid, data = prompt_blob(entry)
        blobs[bid] = data
        ids.append(bid)
    return ids


def _answer_query(answer: Any, approve: bool) -> None:
    """Fill an interaction response: ``approved`` or ``rejected`` (through a ``result`` wrapper
    when the response has one), else an empty message."""
    fields = answer.DESCRIPTOR.fields_by_name
    if "approved" in fields and approve:
        answer.approved.SetInParent()
    elif "rejected" in fields:
        answer.rejected.reason = "not supported by the raw client"
    elif "result" in fields and hasattr(answer.result, "DESCRIPTOR"):
        _answer_query(answer.result, approve)
    elif "error" in fields:
        answer.error.SetInParent()
    answer.SetInParent()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_no: int, payload: bytes) -> bytes:
    return _varint(field_no << 3 | 2) + _varint(len(payload)) + payload


def _top_level_fields(data: bytes) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(data):
        tag, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(tag >> 3)
        wire = tag & 7
        if wire == 0:
            while data[i] & 0x80:
                i += 1
            i += 1
        elif wire == 2:
            n, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return out
