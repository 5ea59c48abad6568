"""Scripting for the emulator: behaviour knobs, injectable faults, the deterministic default reply."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._schema import structured_reply
from ._tools import ToolCallsSpec, ToolResult
from ._view import DEFAULT_MIN_CLI_VERSION

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_THINKING",
    "Behaviour",
    "Fault",
    "ModelSpec",
    "ReplyContext",
    "Usage",
    "estimate_tokens",
    "expected_reply",
    "reply_for",
]

#: Thinking text streamed before the reply unless ``Behaviour.thinking`` says otherwise.
DEFAULT_THINKING = "Thinking about the question."


def expected_reply(
    text: str,
    *,
    earlier: int = 0,
    first: str | None = None,
    turns: int = 0,
    system: str | Sequence[str] | None = None,
    tools: Sequence[str] = (),
    mode: str | None = None,
    queries: Sequence[tuple[str, str]] = (),
) -> str:
    """The emulator's default reply to the user message ``text``: it states what the model saw.

    ``earlier``: how many earlier messages of the conversation the model saw (user, assistant and
    tool messages from ``root_prompt_messages_json`` and the checkpoint's turns; with
    ``Behaviour.read_conversation_history`` also ``conversation_history``); ``first``: the text of
    the first earlier user message (shown when ``earlier`` > 0); ``turns``: how many of the earlier
    exchanges came from the client-held checkpoint's turn blobs (a session) rather than from
    prompt messages the client rebuilt (a stateless request); ``system``: the system text(s) the
    model saw (custom system prompt when accepted, ``cloud_rule``, global rules, ``system`` prompt
    messages; identical texts once each, in that order); ``tools``: the names of the tools the model
    could call (offered, allowed by the header and the mode, listed by a connected MCP server);
    ``mode``: the run's mode when it is not a chat mode (unspecified or ask); ``queries``:
    ``(kind, outcome)`` of the interaction queries it asked. Quoted texts longer than
    ``REPLY_QUOTE_CHARS`` are cut there with "…". Tests compute the expected text with
    this function and never hard-code the format::

        "Emulated reply to: hi"
        'Emulated reply to: three [earlier: 4 messages, first user message "one"]'
        'Emulated reply to: two [earlier: 2 messages, first user message "one"; checkpoint turns: 1]'
        'Emulated reply to: hi [system: "Be brief."; tools: get_weather; mode: agent]'
    """
    parts: list[str] = []
    if system:
        texts = [system] if isinstance(system, str) else list(system)
        parts.append("system: " + " | ".join(_quote(t) for t in texts))
    if earlier:
        seen = f"earlier: {earlier} messages"
        if first is not None:
            seen += f", first user message {_quote(first)}"
        parts.append(seen)
    if turns:
        parts.append(f"checkpoint turns: {turns}")
    if tools:
        parts.append("tools: " + ", ".join(tools))
    if mode and mode not in ("unspecified", "ask"):
        parts.append(f"mode: {mode}")
    if queries:
        parts.append("queries: " + ", ".join(f"{k} {o}" for k, o in queries))
    return f"Emulated reply to: {text}" + (f" [{'; '.join(parts)}]" if parts else "")


#: Longer system texts and first messages are shortened in the reply (a long system prompt must
#: not turn a short answer into pages the client may cut at its max_tokens).
REPLY_QUOTE_CHARS = 120


def _quote(text: str) -> str:
    if len(text) > REPLY_QUOTE_CHARS:
        text = text[: REPLY_QUOTE_CHARS - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def reply_for(ctx: ReplyContext) -> str:
    """The emulator's default reply for what the model saw in ``ctx``: :func:`expected_reply`, or,
    when a system text asks for JSON (cursorpipe's ``response_format`` instruction), a JSON answer
    as a real model would give: a valid instance of the requested JSON Schema filled from the user
    message where it can be (:func:`~cursorpipe.testing.emulator.schema_instance`), or
    ``{"answer": <expected_reply>}`` for plain JSON mode."""
    plain = expected_reply(
        ctx.text,
        earlier=len(ctx.history),
        first=ctx.first_user_message,
        turns=ctx.turn - 1,
        system=ctx.system_texts,
        tools=ctx.tools,
        mode=ctx.mode,
        queries=ctx.queries,
    )
    structured = structured_reply(ctx.system_texts, ctx.text, plain)
    return plain if structured is None else structured


def estimate_tokens(text: str) -> int:
    """Deterministic token count used for usage numbers (about four characters per token)."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass(frozen=True)
class ReplyContext:
    """What a reply callable gets: what the emulated model saw.

    ``text``: the user message; ``turn``: the checkpoint's turns + 1; ``history``: the earlier
    messages as ``(role, text)`` pairs (prompt messages, then checkpoint turns; a tool message's
    text is its result); ``system_prompt``: the system texts joined by newlines (``""`` if none);
    ``system_texts``: each distinct system text; ``tools``: the names of the tools it could call;
    ``mode``: the run's mode name (``"agent"``, ``"ask"``, ``"unspecified"`` ...); ``queries``: the
    interaction queries asked and their outcomes; ``model``: the requested model id;
    ``run_request``: the raw run request; ``tool_results``: the tool results the model saw this turn
    (from its own tool calls, or pending at the end of a stateless history)."""

    text: str
    turn: int
    history: tuple[tuple[str, str], ...]
    system_prompt: str
    model: str
    run_request: Any = None
    tool_results: tuple[ToolResult, ...] = ()
    system_texts: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    mode: str = "unspecified"
    queries: tuple[tuple[str, str], ...] = ()

    @property
    def earlier_user_messages(self) -> int:
        """How many earlier user messages the emulator saw."""
        return sum(1 for role, _ in self.history if role == "user")

    @property
    def first_user_message(self) -> str | None:
        """The text of the first earlier user message (``None`` if there is none)."""
        return next((t for role, t in self.history if role == "user"), None)


@dataclass(frozen=True)
class Usage:
    """Token usage the emulator reports in ``turn_ended``; ``None`` fields are computed.

    As on the live service, ``input_tokens`` includes ``cache_read_tokens`` and
    ``cache_write_tokens`` (live-dialect.md row 13)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_cents: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model of the emulator's catalogue (REST ``/v1/models`` and the ``GetUsableModels`` RPC)."""

    id: str
    display_name: str
    aliases: tuple[str, ...] = ()
    parameters: tuple[Mapping[str, Any], ...] = ()
    variants: tuple[Mapping[str, Any], ...] = ()
    #: Per-effort sibling slugs (``gpt-5.2-high``) that ``GetUsableModels`` lists next to the
    #: family but ``Run`` rejects with a bare ``resource_exhausted`` (live-dialect.md row 14).
    siblings: tuple[str, ...] = ()

    def rest(self) -> dict[str, Any]:
        """The ``/v1/models`` item (connect.md §9.1)."""
        item: dict[str, Any] = {"id": self.id, "displayName": self.display_name}
        if self.aliases:
            item["aliases"] = list(self.aliases)
        if self.parameters:
            item["parameters"] = [dict(p) for p in self.parameters]
        if self.variants:
            item["variants"] = [dict(v) for v in self.variants]
        return item


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("auto", "Auto", aliases=("default",)),
    ModelSpec(
        "composer-2",
        "Composer 2",
        parameters=(
            {
                "id": "fast",
                "displayName": "Fast",
                "values": [{"value": "true", "displayName": "On"}, {"value": "false", "displayName": "Off"}],
            },
        ),
    ),
    ModelSpec(
        "claude-4.5-sonnet",
        "Claude 4.5 Sonnet",
        aliases=("sonnet-4.5",),
        parameters=(
            {
                "id": "thinking",
                "displayName": "Thinking",
                "values": [{"value": "true", "displayName": "On"}, {"value": "false", "displayName": "Off"}],
            },
        ),
        variants=(
            {
                "params": [{"id": "thinking", "value": "false"}],
                "displayName": "Claude 4.5 Sonnet",
                "isDefault": True,
            },
            {"params": [{"id": "thinking", "value": "true"}], "displayName": "Claude 4.5 Sonnet Thinking"},
        ),
    ),
    ModelSpec("gpt-5", "GPT-5", aliases=("gpt5",)),
    ModelSpec(
        "gpt-5.2",
        "GPT-5.2",
        parameters=(
            {
                "id": "reasoning",
                "displayName": "Reasoning",
                "values": [
                    {"value": "low", "displayName": "Low"},
                    {"value": "medium", "displayName": "Medium"},
                    {"value": "high", "displayName": "High"},
                ],
            },
        ),
        siblings=("gpt-5.2-low", "gpt-5.2-high"),
    ),
)


class Fault(enum.Enum):
    """Failures :meth:`Emulator.inject` can schedule for the next request(s) of their kind."""

    #: ``/auth/exchange_user_api_key`` answers 401 (connect.md §2.2).
    UNAUTHENTICATED_EXCHANGE = "unauthenticated_exchange"
    #: The run is refused with Connect ``unauthenticated`` (end-stream error, connect.md §2.8).
    UNAUTHENTICATED = "unauthenticated"
    #: ``resource_exhausted`` with ``ErrorDetails{ERROR_PRO_USER_USAGE_LIMIT, is_retryable: false}``.
    USAGE_LIMIT = "usage_limit"
    #: ``resource_exhausted`` with ``ErrorDetails{ERROR_RATE_LIMITED, is_retryable: true}`` and
    #: ``retry-after`` in the end-stream metadata.
    RATE_LIMIT = "rate_limit"
    #: ``invalid_argument`` with ``ErrorDetails{ERROR_BAD_MODEL_NAME}`` (also what an unknown model id gets).
    BAD_MODEL = "bad_model"
    #: ``resource_exhausted``-free version gate: ``ErrorDetails{ERROR_OUTDATED_CLIENT}``.
    OUTDATED_CLIENT = "outdated_client"
    #: Text and a checkpoint, then a clean end-stream ``{}`` without ``turn_ended`` (a dropped turn).
    DROP_MID_STREAM = "drop_mid_stream"
    #: After the first text delta the stream goes silent (no heartbeats) for ``seconds`` or forever.
    STALL = "stall"
    #: The first text/thinking delta comes ``seconds`` late (default 2 s).
    SLOW_FIRST_TOKEN = "slow_first_token"  # noqa: S105 - not a secret
    #: Every text delta comes ``seconds`` after the previous one (default 0.2 s).
    TOKEN_DELAY = "token_delay"  # noqa: S105 - not a secret
    #: ``unavailable`` end-stream error before any output (a retryable server hiccup).
    UNAVAILABLE = "unavailable"
    #: The run's HTTP request gets a bare HTTP ``status`` (default 429) with no Connect body, plus a
    #: ``Retry-After`` header when ``retry_after`` is given (a proxy or overloaded edge;
    #: official-sdk-as-peer.md §4 saw the SDK map it to ``unavailable``).
    HTTP_ERROR = "http_error"
    #: Mid-stream, after some text: an envelope whose length prefix promises more bytes than are
    #: ever sent, then the response body ends (a connection cut inside a frame, connect.md §3.1).
    TRUNCATED_FRAME = "truncated_frame"
    #: Mid-stream, after some text: a well-framed envelope whose payload is not a valid
    #: ``AgentServerMessage`` (garbage protobuf), then a clean end-stream ``{}``.
    GARBAGE_FRAME = "garbage_frame"
    #: Mid-stream, after some text: an envelope with a flag byte outside connect.md §3.1's set
    #: (``0x04``), carrying a valid message, then a clean end-stream ``{}``.
    BAD_FLAG_FRAME = "bad_flag_frame"
    #: Mid-stream, after some text: the end-stream frame (flag ``0x02``) carries non-JSON bytes.
    BAD_END_STREAM = "bad_end_stream"


@dataclass
class Behaviour:
    """How the emulator answers. Every field has a faithful default; change what a test needs.

    Attributes:
        reply: the reply text, or a callable ``(ReplyContext) -> str``; ``None`` = :func:`expected_reply`.
        thinking: thinking text streamed first (``""`` for none), or a callable like ``reply``.
        usage: fixed usage numbers; unset fields are estimated from the texts.
        chunks: how many text deltas the reply is split into (thinking uses the same count).
        token_delay_s: delay before every text delta after the first.
        first_token_delay_s: delay before the first delta.
        heartbeats: server ``heartbeat`` updates sent before the first text delta.
        heartbeat_interval_s: also send a server heartbeat whenever the turn waits this long.
        interaction_query: send this query (or these, in order) before the reply and wait for each
            answer: ``"web_search"``, ``"web_fetch"``, ``"ask_question"``, ``"switch_mode"``,
            ``"create_plan"``, ``"mcp_auth"``, ``"generate_image"``, ``"setup_vm"``, or
            ``"unknown"`` (field 99 of ``InteractionQuery``, a case no schema knows: live-dialect.md
            row 12 says such cases get an approved-shaped reply under the same field number). An
            answer under another field number ends the turn with ``invalid_argument``; the outcome
            (``approved``, ``rejected``, ``success``, ``error`` ...) is recorded on the run and stated
            in the default reply.
        request_context: ask for the request context with the ``request_context_args`` exec (as
            Cursor does every turn in the SDK's default mode, connect.md §6.1).
        extra_exec: also send an ``mcp_args`` exec (``{"name", "tool_name", "args"}``) the client must
            answer or decline; its answer is recorded.
        blob_round_trip: besides the system-prompt blob, set a blob, read it back and read an unknown
            id (must be an empty result); the outcome is recorded on the run.
        system_prompt_blob: the text stored in the client's KV store as the system-prompt blob.
        gzip_frames: gzip-compress every response frame (flag 0x01, connect.md §3.1).
        runsse_content_type: the ``Content-Type`` of RunSSE responses; Cursor may label them
            ``text/event-stream`` while the body stays Connect envelopes (connect.md §3.2).
        advertise_http2: answer ``GetServerConfig`` with ``http2_config = FORCE_ALL_ENABLED`` so
            clients that obey it (the official SDK) use the h2c ``Run`` RPC.
        http2_disabled: answer ``GetServerConfig`` with ``http2_config = FORCE_ALL_DISABLED`` (the
            server's HTTP/2 kill switch, connect.md §3.4); wins over ``advertise_http2``.
        refuse_http1_run: answer ``Run``/``RunSSE`` over HTTP/1.1 with a bare HTTP 464, as the
            live load balancer does on the agent path (live-dialect.md row 21); ``None`` = do so
            whenever ``advertise_http2`` is set.
        envelope_unary: wrap binary unary responses in a Connect envelope, as the live service
            may (live-dialect.md row 23); the default serves them raw, as connect.md §3.2 says.
        reject_sibling_slugs: refuse a run whose ``requested_model`` is a per-effort sibling slug
            (``ModelSpec.siblings``) with a bare ``resource_exhausted`` (live-dialect.md row 14).
        token_lifetime_s: lifetime of the access tokens the exchange issues.
        models: the model catalogue.
        default_model: the model ``GetDefaultModelForCli`` returns.
        routed_model: when the requested model is ``auto``/``default``, send a ``routed_model``
            update naming this display name.
        max_tokens: ``token_details.max_tokens`` in checkpoints.
        tool_calls: the tool calls the model makes when it can see tools (the tool rules below): a
            list of :class:`ToolCallScript` (one round, all sent in parallel; not repeated when the
            request's history already ends in tool results), or a callable
            ``(ToolContext) -> list[ToolCallScript]`` asked before every round until it returns
            nothing (see :func:`tool_rounds`); ``None`` = the default rule
            (:func:`default_tool_calls`) when ``auto_tool_calls`` is true. Without visible tools no
            call is made.
        auto_tool_calls: apply the default rule when ``tool_calls`` is ``None``.
        tool_result_timeout_s: how long the model waits for a tool's ``mcp_result`` +
            ``stream_close`` (each exec heartbeat from the client restarts the wait); then it aborts
            the exec and ends the turn with Connect ``deadline_exceeded``.
        max_tool_rounds: at most this many rounds of tool calls per turn.
        tool_preamble: text streamed before the first round of tool calls.
        request_context_per_tool_call: ask for the request context again once per tool call
            (connect.md §6.1 [S CC]).
        meta_tool_discovery: before the first round, show the model discovering the tools through
            Cursor's MCP meta-tool (a ``tool_call_started``/``tool_call_completed`` pair whose
            ``ToolCall`` is ``get_mcp_tools_tool_call`` (44), a case outside cursorpipe's proto subset,
            so it decodes as an unknown field). The official SDK says its custom tools are found this
            way (custom-tools.d.ts) [G: the updates Cursor really sends for it are unknown]; clients
            must not mistake it for one of the caller's tool calls.

    The live service's rules (issue 11, live-dialect.md rows 1-24; strict by default, each switch
    relaxes one rule so tests can show the old variant failing and passing):
        read_conversation_history: also read ``UserMessageAction.conversation_history`` and
            ``trailing_conversation_history`` into the model's view (row 3: the live service builds
            the prompt from ``root_prompt_messages_json`` and the checkpoint only).
        custom_system_prompt: who may send ``AgentRunRequest.custom_system_prompt``: ``"never"``,
            ``"sdk"`` (clients sending ``x-cursor-client-type: sdk``: Cursor's own SDK sends it and
            SDK access is allow-listed per account, row 1) or ``"always"``; anyone else gets
            ``invalid_argument: unknown option '--system-prompt'`` (row 2, seen live with an API key).
        sdk_client_allowed: accept ``x-cursor-client-type: sdk``; ``False`` models an account
            without SDK access: ``permission_denied`` (``ERROR_UNAUTHORIZED`` details, [G]: the live
            answer to a non-allow-listed SDK client is unrecorded).
        min_cli_version: ``x-cursor-client-type: cli`` must send ``x-cursor-client-version``
            ``cli-YYYY.MM.DD-<7 hex>`` built on or after this ``YYYY.MM.DD`` date, else
            ``permission_denied`` with ``ERROR_OUTDATED_CLIENT`` (row 1); ``None`` accepts any.
        reject_exclude_workspace_context: refuse ``exclude_workspace_context=true`` with
            ``invalid_argument`` (row 24).
        strict_tool_call_ids: a tool-call id in the prompt messages outside
            ``^[a-zA-Z0-9_-]{1,64}$`` ends the run with an opaque ``resource_exhausted`` (row 15).
        tool_gates: tools reach the model only when ``x-cursor-agent-allowed-tools`` is absent or
            names the MCP family (row 7) and the mode is not ASK (row 8); ``False`` shows every
            offered tool.
        mcp_state: before the model can call tools, ask ``mcp_state_exec_args`` (row 9) and keep only
            the tools a server lists (by ``tool_name`` or ``name``) whose status is ``connected`` or
            unset (Cursor's SDK sends none); a declined or failed answer leaves the model without
            tools.
        post_turn_blob: after ``turn_ended``, store the turn blob (``set_blob``, awaited), send the
            final checkpoint, then end the stream (row 10); the checkpoint sent before
            ``turn_ended`` already names the turn blob, so a client that resets the stream after
            ``turn_ended`` keeps a checkpoint whose blob it never stored, and the emulator also
            marks the conversation: its next run that carries checkpoint turns ends with
            ``internal: Blob not found``. ``False``: the old order (blob, checkpoint, ``turn_ended``,
            end).
        placeholder_user_roots: the checkpoint echoes ``root_prompt_messages_json`` with every user
            entry replaced by an empty placeholder (row 5, [B]): a client must rebuild the roots
            from its transcript instead of reusing them.
    """

    reply: str | Callable[[ReplyContext], str] | None = None
    thinking: str | Callable[[ReplyContext], str] = DEFAULT_THINKING
    usage: Usage | None = None
    chunks: int = 4
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    heartbeats: int = 1
    heartbeat_interval_s: float | None = None
    interaction_query: str | Sequence[str] | None = None
    request_context: bool = True
    extra_exec: Mapping[str, Any] | None = None
    blob_round_trip: bool = False
    system_prompt_blob: str = "You are a helpful assistant (emulated system prompt)."
    gzip_frames: bool = False
    runsse_content_type: str = "application/connect+proto"
    advertise_http2: bool = False
    http2_disabled: bool = False
    refuse_http1_run: bool | None = None
    envelope_unary: bool = False
    reject_sibling_slugs: bool = True
    token_lifetime_s: float = 3600.0
    models: Sequence[ModelSpec] = field(default_factory=lambda: DEFAULT_MODELS)
    default_model: str = "composer-2"
    routed_model: str | None = "Composer 2"
    max_tokens: int = 200_000
    tool_calls: ToolCallsSpec | None = None
    auto_tool_calls: bool = True
    tool_result_timeout_s: float = 30.0
    max_tool_rounds: int = 8
    tool_preamble: str = ""
    request_context_per_tool_call: bool = True
    meta_tool_discovery: bool = False
    read_conversation_history: bool = False
    custom_system_prompt: str = "sdk"
    sdk_client_allowed: bool = True
    min_cli_version: str | None = DEFAULT_MIN_CLI_VERSION
    reject_exclude_workspace_context: bool = True
    strict_tool_call_ids: bool = True
    tool_gates: bool = True
    mcp_state: bool = True
    post_turn_blob: bool = True
    placeholder_user_roots: bool = True

    @classmethod
    def permissive(cls, **changes: Any) -> Behaviour:
        """Every live-service rule relaxed (the emulator as it was before issue 11), plus ``changes``."""
        relaxed: dict[str, Any] = {
            "read_conversation_history": True,
            "custom_system_prompt": "always",
            "sdk_client_allowed": True,
            "min_cli_version": None,
            "reject_exclude_workspace_context": False,
            "strict_tool_call_ids": False,
            "tool_gates": False,
            "mcp_state": False,
            "post_turn_blob": False,
            "placeholder_user_roots": False,
            "reject_sibling_slugs": False,
            "refuse_http1_run": False,
        }
        relaxed.update(changes)
        return cls(**relaxed)
