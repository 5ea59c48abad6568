"""The turn as a sans-IO state machine: what to send first, and what to answer to each server
message (connect.md §5-§7, agent-v1-minimal.md §0). No sockets, no asyncio: the channel code feeds
``AgentServerMessage`` objects in and sends the returned ``AgentClientMessage`` replies out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import struct_pb2, unknown_fields

from ..._proto.agent.v1 import agent_pb2 as pb
from ..._tool_choice import forced_tool
from ...errors import ConfigurationError
from ...types import (
    ChatMessage,
    Event,
    ImagePart,
    TextDelta,
    ThinkingDelta,
    TokenCountDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
)

__all__ = [
    "CLI_CLIENT_VERSION",
    "DIALECTS",
    "MCP_ALLOWED_TOOLS",
    "SDK_CLIENT_VERSION",
    "ConversationState",
    "Dialect",
    "Step",
    "TurnMachine",
    "WireProfile",
    "answer_query",
    "build_run_request",
    "cancel_message",
    "conversation_id_for",
    "exec_heartbeat_message",
    "heartbeat_message",
    "mcp_result_messages",
    "normalise_call_id",
    "offered_tools",
    "profile_for",
    "request_context",
    "root_entry",
    "system_text",
    "tool_choice_instruction",
]

#: A named wire profile (live-dialect.md rows 1-3): the identity and where the system prompt and
#: the earlier turns go. ``cli`` is what every live-tested peer sends; ``sdk`` is Cursor's SDK.
Dialect = Literal["cli", "sdk"]
DIALECTS: tuple[Dialect, ...] = ("cli", "sdk")

#: live-dialect.md row 1: the live-tested peers send ``cli-YYYY.MM.DD-<7 hex>``. This is the newest
#: version a live-tested peer is recorded sending (with its real build hash); the service gates stale
#: versions (ERROR_OUTDATED_CLIENT), which switches to the ``sdk`` identity automatically, and
#: ``CURSORPIPE_CLIENT_VERSION`` overrides it.
CLI_CLIENT_VERSION = "cli-2026.09.02-c22c1a3"
#: Cursor's official Python SDK 1.1.0 (connect.md §4.3).
SDK_CLIENT_VERSION = "sdk-python-1.1.0"
#: live-dialect.md row 7: with tools, the MCP family (the run needs ``get_mcp_tools_tool_call`` to
#: start); without tools ``""`` (no built-in tools: a chat bridge must not read files or run commands).
MCP_ALLOWED_TOOLS = (
    "mcp_tool_call,get_mcp_tools_tool_call,list_mcp_resources_tool_call,read_mcp_resource_tool_call,"
    "mcp_auth_tool_call"
)


@dataclass(frozen=True)
class WireProfile:
    """Every wire choice where the live-tested peers and Cursor's SDK differ (live-dialect.md).

    ``dialect`` names the bundle (:func:`profile_for`); the other fields can be set one by one for
    tests and for ``cursorpipe doctor --live``, which compare variants against a service.

    Attributes:
        dialect: ``cli`` or ``sdk``: ``x-cursor-client-type`` and the default version.
        client_version: ``x-cursor-client-version`` (``""`` = the dialect's default).
        system_prompt: ``"rules"``: a global rule and ``cloud_rule`` in the request-context reply
            plus a system entry in ``root_prompt_messages_json`` (row 2); ``"custom"``: also
            ``AgentRunRequest.custom_system_prompt`` (8), which the SDK sends and API-key accounts
            are reported to reject.
        history: ``"roots"``: earlier messages as ``root_prompt_messages_json`` blobs (row 3, what
            the service reads); ``"conversation_history"``: ``UserMessageAction.conversation_history``
            (7) and ``trailing_conversation_history`` (8), the schema's fields the service ignores.
        tools_in_request_context: offer tools in the request-context reply as well as ``mcp_tools``
            (row 6).
        mcp_allowed_tools: send the MCP family in ``x-cursor-agent-allowed-tools`` when tools exist
            (row 7); ``False`` sends ``""`` always.
        mode: the ``UserMessage.mode`` of each turn (row 8). ``"auto"``: AGENT when tools are
            offered, else the request's chat mode (ASK, or PLAN); ``"ask"`` / ``"agent"`` force that
            mode whatever is offered, so ``cursorpipe doctor --live`` can compare ASK against AGENT
            on a tool turn (live-dialect.md "Live checks", check 4).
    """

    dialect: Dialect = "cli"
    client_version: str = ""
    system_prompt: Literal["rules", "custom"] = "rules"
    history: Literal["roots", "conversation_history"] = "roots"
    tools_in_request_context: bool = True
    mcp_allowed_tools: bool = True
    mode: Literal["auto", "ask", "agent"] = "auto"

    @property
    def client_type(self) -> str:
        """``x-cursor-client-type``."""
        return self.dialect

    @property
    def version(self) -> str:
        """``x-cursor-client-version``."""
        if self.client_version:
            return self.client_version
        return CLI_CLIENT_VERSION if self.dialect == "cli" else SDK_CLIENT_VERSION


def profile_for(dialect: Dialect, client_version: str = "") -> WireProfile:
    """The bundle a dialect stands for: ``cli`` puts the system prompt in rules only; ``sdk`` also
    sends ``custom_system_prompt`` as the SDK does. Both send history as root blobs, the only place
    the live service reads it (live-dialect.md row 3), and tools in the request context."""
    return WireProfile(
        dialect=dialect,
        client_version=client_version,
        system_prompt="rules" if dialect == "cli" else "custom",
    )


# live-dialect.md row 8 (plain chat: confidence B). Plain chat runs in ASK: a live-tested peer (S2A)
# sends ASK for chat, ASK is read-only (a chat bridge must never let Cursor act), and cursorpipe's
# own config only allows ask/plan. With tools the run switches to AGENT, because ASK neither
# accepts tool definitions nor emits tool calls (row 8, confidence A); the allowed-tools header then
# limits the agent to the MCP family, i.e. the caller's own tools.
_MODES = {"ask": pb.AGENT_MODE_ASK, "plan": pb.AGENT_MODE_PLAN}

# live-dialect.md row 12: the reason sent with every declined interaction query.
_DECLINE_REASON = "cursorpipe is a chat bridge: interactive actions are not supported"
_CALL_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Name, identifier and file of what cursorpipe offers as MCP server and as rule.
_SYSTEM_RULE_PATH = "cursorpipe/system-prompt.mdc"


def normalise_call_id(call_id: str) -> str:
    """A tool-call id the service accepts (live-dialect.md row 15: ``^[a-zA-Z0-9_-]{1,64}$``, else
    an opaque ``resource_exhausted``). Valid ids pass unchanged; others become a stable hash-based
    id, so the same caller id always maps to the same wire id within and across requests."""
    if _CALL_ID_RE.match(call_id):
        return call_id
    return "call_" + hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:40]


def conversation_id_for(messages: Sequence[ChatMessage], salt: str = "") -> str:
    """A stable ``conversation_id`` for a stateless conversation, derived from its opening (the
    system text and the first user message): every request of one conversation carries the same
    id, so the service can reuse its prompt cache (live-dialect.md row 20). ``salt`` rotates it."""
    system = "\n".join(m.text for m in messages if m.role == "system")
    first = next((m for m in messages if m.role == "user"), None)
    opening = json.dumps([salt, system, first.text if first else ""], ensure_ascii=False)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "cursorpipe:conversation:" + opening))


def heartbeat_message() -> pb.AgentClientMessage:
    """``client_heartbeat{}`` (bytes ``3a 00``), sent every 5 s (connect.md §6.4)."""
    return pb.AgentClientMessage(client_heartbeat=pb.ClientHeartbeat())


def cancel_message(reason: str = "cancelled by the caller") -> pb.AgentClientMessage:
    """``conversation_action{cancel_action{reason}}`` (connect.md §5.4)."""
    return pb.AgentClientMessage(
        conversation_action=pb.ConversationAction(cancel_action=pb.CancelAction(reason=reason))
    )


def exec_heartbeat_message(exec_id: int) -> pb.AgentClientMessage:
    """``exec_client_control_message.heartbeat{id}``: sent every 3 s while a tool runs (§6.4)."""
    return pb.AgentClientMessage(
        exec_client_control_message=pb.ExecClientControlMessage(heartbeat=pb.ExecClientHeartbeat(id=exec_id))
    )


def mcp_result_messages(exec_id: int, text: str, *, is_error: bool = False) -> list[pb.AgentClientMessage]:
    """The answer to an ``mcp_args`` exec (connect.md §6.1 reply protocol, 11↔11 confirmed):
    ``ExecClientMessage{id, mcp_result: McpResult{success: McpSuccess{content[text], is_error}}}``
    then ``stream_close{id}``. A failed tool is a *successful* MCP call whose result is marked
    ``is_error`` (what MCP itself does for tool errors), so the model reads the error text."""
    result = pb.ExecClientMessage(id=exec_id)
    success = result.mcp_result.success
    success.content.add().text.text = text
    if is_error:
        success.is_error = True
    close = pb.AgentClientMessage(
        exec_client_control_message=pb.ExecClientControlMessage(
            stream_close=pb.ExecClientStreamClose(id=exec_id)
        )
    )
    return [pb.AgentClientMessage(exec_client_message=result), close]


#: The provider the official SDK uses for a caller's own tools (cursor-sdk 1.1.0 ``custom-user-tools``;
#: the emulator follows the same convention). The wire ``name`` is ``"<provider>-<tool_name>"``.
CUSTOM_TOOLS_PROVIDER = "custom-user-tools"


def offered_tools(request: TurnRequest) -> tuple[ToolSpec, ...]:
    """The tools that go on the wire for ``request.tool_choice`` (the run request has no tool_choice
    field, agent-v1.schema.txt ``AgentRunRequest``): ``none`` → no tools at all; a named tool → only
    that tool (so the model cannot pick another); else every tool."""
    if request.tool_choice == "none" or not request.tools:
        return ()
    forced = forced_tool(request.tool_choice)
    if forced:
        named = tuple(t for t in request.tools if t.name == forced)
        if named:
            return named
    return request.tools


def tool_choice_instruction(request: TurnRequest) -> str:
    """``tool_choice`` by constrained prompting (no protocol field exists, see
    :func:`offered_tools`): ``required``/``any`` and a named tool add an instruction to the system
    prompt (wording shared with the emulated path, ``_tool_emulation.tool_instructions``)."""
    if not offered_tools(request):
        return ""
    forced = forced_tool(request.tool_choice)
    if forced:
        return f"You MUST call the tool {forced!r} now before answering."
    if request.tool_choice in ("required", "any"):
        return "You MUST call at least one of the provided tools now before answering."
    return ""


def _tool_definition(tool: ToolSpec) -> pb.McpToolDefinition:
    """An ``McpToolDefinition`` (agent-v1.schema.txt) as the official SDK builds a custom tool:
    provider ``custom-user-tools``, bare ``tool_name``, ``name`` = provider + "-" + tool name, and
    the JSON schema as ``input_schema`` (a ``google.protobuf.Value``, the schema's type for it)."""
    # Only turns with tools need protobuf's JSON mapping (about 0.2 MiB resident, issue 16).
    from google.protobuf import json_format

    d = pb.McpToolDefinition(
        name=f"{CUSTOM_TOOLS_PROVIDER}-{tool.name}",
        tool_name=tool.name,
        provider_identifier=CUSTOM_TOOLS_PROVIDER,
        description=tool.description,
    )
    try:
        json_format.ParseDict(_jsonable(tool.parameters), d.input_schema)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"the parameters schema of tool {tool.name!r} is not JSON", code="invalid_request"
        ) from exc
    return d


def _jsonable(value: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(value)))


def _bare_tool_name(args: pb.McpArgs) -> str:
    if args.tool_name:
        return args.tool_name
    return args.name.removeprefix(CUSTOM_TOOLS_PROVIDER + "-")


def _plain(value: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as plain JSON data. Protobuf has only doubles, so an integral
    number comes back as an int (``3``, not ``3.0``), as Cursor's SDK does in JavaScript
    (live-dialect.md row 16); beyond 2**53 a double holds no exact integer and stays a float."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) <= 2**53 else n
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def _args_json(args: pb.McpArgs) -> str:
    return json.dumps({k: _plain(v) for k, v in args.args.items()}, ensure_ascii=False)


@dataclass
class ConversationState:
    """What Cursor needs from us to continue a conversation (connect.md §5.5): the conversation id,
    the latest checkpoint, the client-side blob store and the per-conversation blob key."""

    conversation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    model: str = ""
    checkpoint: bytes = b""
    """Serialized ``ConversationStateStructure`` of the last completed turn (b"" = new)."""
    blobs: dict[bytes, bytes] = field(default_factory=dict)
    blob_key: str = field(default_factory=lambda: secrets.token_hex(32))
    """``x-blob-encryption-key``: 64 lowercase hex chars, constant per conversation (§4.2)."""
    turns: int = 0
    closed: bool = False
    opening: str = ""
    """Stateless requests: the id derived from the conversation's opening, before any rotation."""
    roots: list[bytes] = field(default_factory=list)
    """Sessions: the ``root_prompt_messages_json`` ids this client built for the conversation
    (live-dialect.md row 5: they replace the echoed checkpoint's roots on every turn)."""

    @property
    def id(self) -> str:
        """The conversation id (``TransportSession.id``)."""
        return self.conversation_id


@dataclass
class Step:
    """The outcome of one server message."""

    events: list[Event] = field(default_factory=list)
    replies: list[pb.AgentClientMessage] = field(default_factory=list)
    ended: bool = False
    tool_calls: list[tuple[int, ToolCall]] = field(default_factory=list)
    """Native tool calls to answer now (stateful mode): ``(exec id, call)``."""
    aborts: list[int] = field(default_factory=list)
    """Exec ids the server aborted (``exec_server_control_message.abort``): cancel their handlers."""


@dataclass
class _PendingCall:
    index: int
    call_id: str
    name: str
    args_text: str = ""
    exec_id: int | None = None


def _image(part: ImagePart) -> bytes:
    if part.data is None:
        raise ConfigurationError(
            "The connect transport sends images inline: pass them as base64 data: URLs "
            "(remote image URLs are not fetched).",
            code="invalid_request",
        )
    return part.data


def _selected_images(msg: pb.UserMessage, images: tuple[ImagePart, ...]) -> None:
    """``UserMessage.selected_context.selected_images``: each image inline as ``SelectedImage{data,
    uuid, mime_type}`` (connect.md §5.3), as the official SDK sends a local image."""
    for part in images:
        img = msg.selected_context.selected_images.add()
        img.data = _image(part)
        img.uuid = str(uuid.uuid4())
        img.mime_type = part.mime_type


def _user_message(text: str, images: tuple[ImagePart, ...], mode: pb.AgentMode.ValueType) -> pb.UserMessage:
    msg = pb.UserMessage(text=text, mode=mode)
    _selected_images(msg, images)
    return msg


def _history(messages: list[ChatMessage], names: Mapping[str, str] | None = None) -> pb.ConversationHistory:
    """``ConversationHistory`` (agent-v1.schema.txt): the schema's own history message, used only
    by ``WireProfile(history="conversation_history")`` (the live service does not read it,
    live-dialect.md row 3; kept so tests and ``doctor --live`` can compare)."""
    names = dict(names or {})
    hist = pb.ConversationHistory()
    for m in messages:
        item = hist.messages.add()
        if m.role == "assistant":
            if m.text or not m.tool_calls:
                item.assistant.content.add().text.text = m.text
            for call in m.tool_calls:
                tc = item.assistant.content.add().tool_call
                tc.tool_call_id = normalise_call_id(call.id)
                tc.tool_name, tc.args_json = call.name, call.arguments or "{}"
                names[call.id] = call.name
        elif m.role == "tool":
            tool = item.tool
            tool.tool_call_id = normalise_call_id(m.tool_call_id or "")
            tool.tool_name = m.name or names.get(m.tool_call_id or "", "")
            tool.content.add().text.text = m.text
        else:
            for p in m.content:
                if isinstance(p, ImagePart):
                    img = item.user.content.add().image
                    img.data = base64.b64encode(_image(p)).decode()
                    img.mime_type = p.mime_type
                else:
                    item.user.content.add().text.text = p.text
            if not m.content:
                item.user.content.add().text.text = ""
    return hist


def _tool_args(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return arguments  # not JSON: the model still sees what it produced


def root_entry(message: ChatMessage, names: Mapping[str, str]) -> dict[str, Any]:
    """One ``root_prompt_messages_json`` entry (live-dialect.md row 3): ``{"role", "content"}`` with
    content parts ``text``, ``image`` (a data URL), ``tool-call`` and ``tool-result``. Tool-call ids
    are normalised (row 15)."""
    parts: list[dict[str, Any]] = []
    if message.role == "system":
        return {"role": "system", "content": message.text}
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        parts.append(
            {
                "type": "tool-result",
                "toolCallId": normalise_call_id(call_id) if call_id else "",
                "toolName": message.name or names.get(call_id, ""),
                "result": message.text,
            }
        )
        return {"role": "tool", "content": parts}
    for p in message.content:
        if isinstance(p, ImagePart):
            data = base64.b64encode(_image(p)).decode()
            parts.append(
                {"type": "image", "image": f"data:{p.mime_type};base64,{data}", "mimeType": p.mime_type}
            )
        elif p.text:
            parts.append({"type": "text", "text": p.text})
    if message.role == "assistant":
        for call in message.tool_calls:
            parts.append(
                {
                    "type": "tool-call",
                    "toolCallId": normalise_call_id(call.id),
                    "toolName": call.name,
                    "args": _tool_args(call.arguments),
                }
            )
    if not parts:
        parts.append({"type": "text", "text": ""})
    return {"role": "assistant" if message.role == "assistant" else "user", "content": parts}


def _store_root(state: ConversationState, entry: Mapping[str, Any]) -> bytes:
    """Serialise one root entry, keep its bytes for ``get_blob`` and return its id: the SHA-256 of
    the bytes (live-dialect.md row 4: a ``*Structure`` bytes field holds blob ids, never data)."""
    data = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob_id = hashlib.sha256(data).digest()
    state.blobs[blob_id] = data
    return blob_id


def system_text(request: TurnRequest) -> str:
    """The request's system prompt plus the tool-choice instruction (see :func:`tool_choice_instruction`)."""
    system = "\n\n".join(m.text for m in request.messages if m.role == "system")
    rule = tool_choice_instruction(request)
    if rule:
        system = f"{system}\n\n{rule}" if system else rule
    return system


def build_run_request(
    request: TurnRequest,
    state: ConversationState,
    *,
    model_id: str,
    run_id: str,
    model_parameters: tuple[tuple[str, str], ...] = (),
    max_mode: bool = False,
    profile: WireProfile | None = None,
    stateless: bool = True,
    resume: bool = False,
    checkpoint: bytes | None = None,
) -> pb.AgentClientMessage:
    """The first client message of a turn (connect.md §5.3, live-dialect.md rows 2-8):
    ``conversation_state``, the action, ``requested_model{model_id}``, the caller's tools in
    ``mcp_tools``, the ``conversation_id``, ``run_id`` and ``next_interaction_query_id`` 0.

    Stateless requests (``stateless=True``) rebuild ``ConversationStateStructure`` from the whole
    transcript: ``root_prompt_messages_json`` holds the blob ids of a system entry and one entry per
    earlier message (the blob bytes go into ``state.blobs`` and are served on ``get_blob``); ``turns``
    stays empty, so the roots are the only history and nothing is counted twice. The current user
    message is the action's ``user_message``. A stateless tool exchange (the model's tool calls and
    their results after the last user message) puts the whole transcript in the roots and sends an
    empty user message, so the model continues from the results [C: the peers rebuild the roots,
    live-dialect.md row 3; how they mark a continuation is not recorded].

    Sessions (``stateless=False``) reuse the latest checkpoint (the service keeps the turns in it)
    but put back the roots this client built (live-dialect.md row 5: the echoed roots may hold
    placeholders); the request's messages besides the new one become root entries as well.
    """
    profile = profile or WireProfile()
    run = pb.AgentRunRequest(
        conversation_id=state.conversation_id,
        run_id=run_id,
        next_interaction_query_id=0,
    )
    if not stateless or resume:
        run.conversation_state.ParseFromString(state.checkpoint if checkpoint is None else checkpoint)
        if not stateless and run.conversation_state.ByteSize():
            # live-dialect.md row 5: the echoed roots may hold placeholders instead of the user's
            # entries; the roots are this client's own, the rest of the checkpoint is the service's.
            del run.conversation_state.root_prompt_messages_json[:]
            run.conversation_state.root_prompt_messages_json.extend(state.roots)
    run.conversation_state.SetInParent()
    run.mcp_tools.SetInParent()
    # The caller's tools travel as MCP tool definitions here AND in the request-context reply
    # (live-dialect.md row 6; the reply is built by TurnMachine).
    tools = offered_tools(request)
    for tool in tools:
        run.mcp_tools.mcp_tools.append(_tool_definition(tool))
    run.requested_model.model_id = model_id
    if max_mode:
        run.requested_model.max_mode = True  # §5.2: only set when true
    for key, value in model_parameters:
        run.requested_model.parameters.add(id=key, value=value)
    if resume:
        # connect.md §8.3: reconnect with resume_action and the latest checkpoint, same run_id.
        run.action.resume_action.SetInParent()
        return pb.AgentClientMessage(run_request=run)
    _add_user_action(run, request, state, profile=profile, stateless=stateless, tools=tools)
    return pb.AgentClientMessage(run_request=run)


def _split_transcript(convo: list[ChatMessage]) -> tuple[ChatMessage, list[ChatMessage], list[ChatMessage]]:
    """(the last user message, the messages before it, a trailing tool exchange after it)."""
    last_user_index = max((i for i, m in enumerate(convo) if m.role == "user"), default=-1)
    if last_user_index < 0:
        raise ConfigurationError("a request needs at least one user message", code="invalid_request")
    earlier = convo[:last_user_index]
    trailing = convo[last_user_index + 1 :]
    if trailing and not any(m.role == "tool" or m.tool_calls for m in trailing):
        # Messages after the last user message (e.g. an assistant prefill) cannot be expressed;
        # keep them as history so nothing is lost silently.
        return convo[last_user_index], earlier + trailing, []
    return convo[last_user_index], earlier, trailing


def _agent_mode(
    request: TurnRequest, profile: WireProfile, tools: Sequence[ToolSpec]
) -> pb.AgentMode.ValueType:
    """live-dialect.md row 8 (see _MODES): AGENT with tools (ASK takes none), else ASK or PLAN,
    unless the profile forces one mode (the live probe's ASK-with-tools variant)."""
    if profile.mode == "ask":
        return pb.AGENT_MODE_ASK
    if profile.mode == "agent":
        return pb.AGENT_MODE_AGENT
    return pb.AGENT_MODE_AGENT if tools else _MODES.get(request.mode, pb.AGENT_MODE_ASK)


def _add_user_action(
    run: pb.AgentRunRequest,
    request: TurnRequest,
    state: ConversationState,
    *,
    profile: WireProfile,
    stateless: bool,
    tools: Sequence[ToolSpec],
) -> None:
    """The user-message action and the history, as roots or as conversation_history (the profile's
    choice), and the custom system prompt (see :func:`build_run_request`)."""
    system = system_text(request)
    convo = [m for m in request.messages if m.role != "system"]
    last, earlier, trailing = _split_transcript(convo)
    mode = _agent_mode(request, profile, tools)
    action = run.action.user_message_action
    names = {c.id: c.name for m in convo for c in m.tool_calls}
    if profile.history == "roots":
        roots = run.conversation_state.root_prompt_messages_json
        if system and (stateless or not state.checkpoint):
            roots.append(_store_root(state, {"role": "system", "content": system}))
        if trailing:
            history = [*earlier, last, *trailing]
            action.user_message.CopyFrom(_user_message("", (), mode))
        else:
            history = earlier
            action.user_message.CopyFrom(_user_message(last.text, last.images, mode))
        for m in history:
            roots.append(_store_root(state, root_entry(m, names)))
        if not stateless:
            state.roots = [bytes(r) for r in roots]
    else:
        action.user_message.CopyFrom(_user_message(last.text, last.images, mode))
        if earlier:
            action.conversation_history.CopyFrom(_history(earlier, names))
        if trailing:
            action.trailing_conversation_history.CopyFrom(_history(trailing, names))
    if system and profile.system_prompt == "custom":
        run.custom_system_prompt = system


def request_context(
    workspace: str, *, system: str = "", tools: Sequence[ToolSpec] = (), profile: WireProfile | None = None
) -> pb.RequestContext:
    """The answer to ``request_context_args`` (connect.md §6.1, live-dialect.md rows 2 and 6): the
    environment; the system prompt as an always-applied global rule and as ``cloud_rule``; the
    caller's tools in ``tools`` with their ``mcp_instructions``; and ``mcp_meta_tool_options
    {enabled: true}``, which the SDK sends even without tools."""
    profile = profile or WireProfile()
    ctx = pb.RequestContext()
    env = ctx.env
    env.os_version = f"{platform.system().lower()} {platform.release()}"
    env.workspace_paths.append(workspace)
    env.shell = os.environ.get("SHELL", "/bin/sh") if os.name != "nt" else "cmd.exe"
    env.time_zone = time.tzname[0] if time.tzname else "UTC"
    env.process_working_directory = workspace
    if system:
        rule = ctx.rules.add(full_path=_SYSTEM_RULE_PATH, content=system, is_required=True)
        getattr(rule.type, "global").SetInParent()  # `global` is a Python keyword
        ctx.cloud_rule = system
    if tools and profile.tools_in_request_context:
        for tool in tools:
            ctx.tools.append(_tool_definition(tool))
        ctx.mcp_instructions.add(
            server_name=CUSTOM_TOOLS_PROVIDER,
            server_identifier=CUSTOM_TOOLS_PROVIDER,
            instructions="Tools provided by the caller of this conversation; call them by name.",
        )
    ctx.mcp_meta_tool_options.enabled = True
    return ctx


def _unknown_numbers(msg: pb.InteractionQuery | pb.ExecServerMessage) -> list[int]:
    try:
        fields = unknown_fields.UnknownFieldSet(msg)
        return [fields[i].field_number for i in range(len(fields))]
    except (TypeError, ValueError):  # pragma: no cover - defensive: implementation differences
        return []


def _empty_field(number: int) -> bytes:
    """Wire bytes of an empty length-delimited field ``number``: an approved-shaped answer to an
    interaction query newer than this proto subset (live-dialect.md row 12). Only a tag and a zero
    length, because no generated class exists for a case the schema does not know yet."""
    tag = number << 3 | 2
    out = bytearray()
    while tag > 0x7F:
        out.append(tag & 0x7F | 0x80)
        tag >>= 7
    out.append(tag)
    return bytes(out) + b"\x00"


def answer_query(query: pb.InteractionQuery, *, approve_web: bool = True) -> pb.AgentClientMessage:
    """The answer to an interaction query (live-dialect.md row 12): web search and web fetch are
    approved (unless ``approve_web`` is off: Cursor then searches on the user's behalf); ask-question,
    switch-mode, create-plan and the other interactive actions are declined in the shapes the SDK
    uses (agent-v1-minimal.md §5); a case unknown to the schema gets an approved-shaped empty
    message under its own field number. Every query gets an answer: an unanswered one hangs the run."""
    resp = pb.InteractionResponse(id=query.id)
    case = query.WhichOneof("query")
    reason = _DECLINE_REASON
    if case == "web_search_request_query":
        if approve_web:
            resp.web_search_request_response.approved.SetInParent()
        else:
            resp.web_search_request_response.rejected.reason = "web search is turned off in cursorpipe"
    elif case == "web_fetch_request_query":
        if approve_web:
            resp.web_fetch_request_response.approved.SetInParent()
        else:
            resp.web_fetch_request_response.rejected.reason = "web fetch is turned off in cursorpipe"
    elif case == "ask_question_interaction_query":
        resp.ask_question_interaction_response.result.rejected.reason = reason
    elif case == "switch_mode_request_query":
        resp.switch_mode_request_response.rejected.reason = reason
    elif case == "create_plan_request_query":
        resp.create_plan_request_response.result.error.error = reason
    elif case == "setup_vm_environment_args":
        # The schema's SetupVmEnvironmentResult has only `success`; the SDK answers success (§5).
        resp.setup_vm_environment_result.success.SetInParent()
    elif case == "pr_management_request_query":
        resp.pr_management_result.error.error = reason
    elif case == "mcp_auth_request_query":
        resp.mcp_auth_request_response.rejected.reason = reason
    elif case == "generate_image_request_query":
        resp.generate_image_request_response.rejected.reason = reason
    elif case == "replace_env_args":
        resp.replace_env_result.failure.error_message = reason
    elif case == "connect_scm_request_query":
        resp.connect_scm_request_response.rejected.reason = reason
    else:
        numbers = [n for n in _unknown_numbers(query) if n != 1]
        if numbers:
            resp.MergeFromString(_empty_field(numbers[0]))
    return pb.AgentClientMessage(interaction_response=resp)


class TurnMachine:
    """Answers server messages for one attempt of one turn and turns updates into events."""

    def __init__(
        self,
        state: ConversationState,
        *,
        workspace: str = "",
        base_checkpoint: bytes | None = None,
        tools: Sequence[str | ToolSpec] = (),
        stateful: bool = False,
        system: str = "",
        profile: WireProfile | None = None,
        approve_web: bool = True,
        call_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.state = state
        self.specs = tuple(t for t in tools if isinstance(t, ToolSpec))
        self.tools = frozenset(t.name if isinstance(t, ToolSpec) else t for t in tools)
        """Names of the caller's offered tools; ``mcp_args`` for any other gets ``tool_not_found``."""
        self.stateful = stateful
        """True with a ``tool_handler``: tool calls are answered in the turn (``Step.tool_calls``);
        False: the turn ends at the model's tool calls (see :meth:`tool_batch`)."""
        self.system = system
        self.profile = profile or WireProfile()
        self.approve_web = approve_web
        self.call_ids = dict(call_ids or {})
        """Wire tool-call id -> the caller's id, for ids :func:`normalise_call_id` changed."""
        self._calls: dict[str, _PendingCall] = {}
        self._next_index = 0
        self._listed: int | None = None
        self.tool_calls: list[ToolCall] = []
        """Every native tool call of this turn, in order."""
        self.workspace = workspace or os.getcwd()
        self.checkpoint: bytes | None = None
        """The latest checkpoint seen in this turn (committed to ``state`` at ``turn_ended``)."""
        self.base_checkpoint = state.checkpoint if base_checkpoint is None else base_checkpoint
        self.usage: Usage | None = None
        self.ended = False
        self.produced = False
        self.routed_model: str | None = None
        self.messages = 0
        self._emitted: dict[str, list[str]] = {"text": [], "thinking": []}
        self._skip: dict[str, str] = {"text": "", "thinking": ""}

    def begin_resume(self) -> None:
        """Prepare for a resumed attempt (connect.md §8.3 ``resume_action``).

        Whether the server re-streams the turn from its start or continues where it stopped is not
        documented (§13), so text already given to the caller is skipped while the new stream
        repeats it, and everything after the first difference is passed on."""
        for kind in ("text", "thinking"):
            self._skip[kind] = "".join(self._emitted[kind])
        self.ended = False

    def _fresh(self, kind: str, text: str) -> str:
        skip = self._skip[kind]
        if skip:
            n = 0
            limit = min(len(skip), len(text))
            while n < limit and skip[n] == text[n]:
                n += 1
            if n == len(text):
                self._skip[kind] = skip[n:]
                return ""
            self._skip[kind] = ""
            text = text[n:]
        self._emitted[kind].append(text)
        return text

    def handle(self, msg: pb.AgentServerMessage) -> Step:
        """What ``msg`` means: events to yield, replies to send, whether the turn ended."""
        self.messages += 1
        step = Step()
        case = msg.WhichOneof("message")
        if case == "interaction_update":
            self._update(msg.interaction_update, step)
        elif case == "kv_server_message":
            step.replies.append(self._kv(msg.kv_server_message))
        elif case == "exec_server_message":
            ex = msg.exec_server_message
            if ex.WhichOneof("message") == "mcp_args" and _bare_tool_name(ex.mcp_args) in self.tools:
                # One of the caller's tools (issue 7): answered later with mcp_result (stateful)
                # or left open while a stateless turn ends.
                self._mcp_call(ex, step)
            else:
                step.replies.extend(self._exec(ex))
        elif case == "interaction_query":
            step.replies.append(answer_query(msg.interaction_query, approve_web=self.approve_web))
        elif case == "conversation_checkpoint_update":
            # connect.md §6: keep the latest; not the end of the turn. One that arrives after
            # turn_ended is the final checkpoint (live-dialect.md row 10): it replaces the one
            # committed at turn_ended.
            self.checkpoint = msg.conversation_checkpoint_update.SerializeToString()
            if self.ended:
                self.state.checkpoint = self.checkpoint
        elif case == "exec_server_control_message":
            control = msg.exec_server_control_message
            if control.WhichOneof("message") == "abort":
                step.aborts.append(control.abort.id)
        # Unknown cases and ttft_breakdown: ignored (forward compatibility).
        step.ended = self.ended
        return step

    def _update(self, update: pb.InteractionUpdate, step: Step) -> None:
        case = update.WhichOneof("message")
        if case == "text_delta":
            td = update.text_delta
            if td.is_server_notice:
                if td.text:
                    step.events.append(TextDelta(td.text, notice=True))
                return
            text = self._fresh("text", td.text) if td.text else ""
            if text:
                self.produced = True
                step.events.append(TextDelta(text))
        elif case == "thinking_delta":
            thought = (
                self._fresh("thinking", update.thinking_delta.text) if update.thinking_delta.text else ""
            )
            if thought:
                self.produced = True
                step.events.append(ThinkingDelta(thought))
        elif case == "routed_model":
            self.routed_model = update.routed_model.display_name or None
        elif case in ("partial_tool_call", "tool_call_started"):
            upd = getattr(update, case)
            tc = upd.tool_call
            if tc.HasField("mcp_tool_call"):
                call_id = upd.call_id or tc.tool_call_id or tc.mcp_tool_call.args.tool_call_id
                call_id = self.call_ids.get(call_id, call_id)
                call = self._announce(call_id, _bare_tool_name(tc.mcp_tool_call.args), step)
                if call is not None and case == "partial_tool_call" and upd.args_text_delta:
                    # Streamed argument text (connect.md §7 partial_tool_call.args_text_delta).
                    call.args_text += upd.args_text_delta
                    step.events.append(ToolCallDelta(index=call.index, arguments_delta=upd.args_text_delta))
        elif case == "tool_requests_listed":
            # {call_count}: how many tool calls the model listed in this step (§7 table, [G]: read
            # here as "the step has this many calls", which lets a stateless turn end at once).
            self._listed = update.tool_requests_listed.call_count or None
        elif case == "turn_ended":
            te = update.turn_ended
            cost = te.estimated_cost.charged_cents if te.HasField("estimated_cost") else None
            self.usage = Usage(
                input_tokens=te.input_tokens,
                output_tokens=te.output_tokens,
                cache_read_tokens=te.cache_read_tokens,
                cache_write_tokens=te.cache_write_tokens,
                reasoning_tokens=te.reasoning_tokens,
                estimated=False,
                cost_cents=cost,
            )
            self.ended = True
            self.commit()
            step.events.append(UsageEvent(self.usage))
            # Calls left for the caller (stateless) make it a tool_calls end even if the server
            # ended the turn itself instead of waiting for their results.
            if self.tool_calls and not self.stateful:
                step.events.append(TurnEnd("tool_calls", self.usage))
            else:
                step.events.append(TurnEnd("stop", self.usage))
        elif case == "token_delta" and update.token_delta.tokens > 0:
            # A running count of output tokens, not text (connect.md §7 row 8, [S]: it need not
            # equal turn_ended's output_tokens). Only the client's max_tokens limiter reads it.
            step.events.append(TokenCountDelta(update.token_delta.tokens))
        # heartbeat, step/summary updates: nothing to emit.

    def _announce(self, call_id: str, name: str, step: Step) -> _PendingCall | None:
        """The tracked call ``call_id``; on first sight a ``ToolCallDelta`` with id and name."""
        if not call_id or name not in self.tools:
            return None
        call = self._calls.get(call_id)
        if call is None:
            call = _PendingCall(index=self._next_index, call_id=call_id, name=name)
            self._next_index += 1
            self._calls[call_id] = call
            self.produced = True
            step.events.append(ToolCallDelta(index=call.index, id=call_id, name=name))
        return call

    def _mcp_call(self, ex: pb.ExecServerMessage, step: Step) -> None:
        """An ``mcp_args`` exec for one of the caller's tools: the call is complete (§6.1)."""
        args = ex.mcp_args
        name = _bare_tool_name(args)
        call_id = args.tool_call_id or f"call_exec_{ex.id}"
        call_id = self.call_ids.get(call_id, call_id)
        pending = self._announce(call_id, name, step)
        assert pending is not None  # name is offered (checked by the caller)
        pending.exec_id = ex.id
        full = _args_json(args)
        arguments = full
        if pending.args_text:
            try:
                same = json.loads(pending.args_text) == json.loads(full)
            except ValueError:
                same = False
            if same:
                arguments = pending.args_text  # the deltas the consumer saw add up to it
        else:
            step.events.append(ToolCallDelta(index=pending.index, arguments_delta=full))
        call = ToolCall(id=call_id, name=name, arguments=arguments)
        self.tool_calls.append(call)
        step.events.append(ToolCallEvent(call, index=pending.index, emulated=False, handled=self.stateful))
        if self.stateful:
            step.tool_calls.append((ex.id, call))

    def tool_batch(self) -> Literal["none", "complete", "maybe"]:
        """Stateless mode: whether the model's tool calls of this step have all arrived.

        ``"complete"`` when ``tool_requests_listed.call_count`` calls have their ``mcp_args`` exec;
        ``"maybe"`` when every call announced so far (``partial_tool_call``/``tool_call_started``)
        has its exec but the count (if any) is not reached: the transport then waits a short grace
        period for more calls before it ends the turn [G: connect.md §7 lists the updates, not
        their order, and the meaning of the count is unverified, so it is a fast path, never a
        reason to wait longer; the server waits for the results after sending the execs, so
        silence means the batch is complete]; ``"none"`` otherwise."""
        if self.stateful or not self.tool_calls:
            return "none"
        done = sum(1 for c in self._calls.values() if c.exec_id is not None)
        if self._listed is not None and done >= self._listed:
            return "complete"
        if all(c.exec_id is not None for c in self._calls.values()):
            return "maybe"
        return "none"

    def commit(self) -> None:
        """Make this turn's latest checkpoint the conversation's (connect.md §5.5)."""
        if self.checkpoint is not None:
            self.state.checkpoint = self.checkpoint
        self.state.turns += 1

    def _kv(self, kv: pb.KvServerMessage) -> pb.AgentClientMessage:
        # connect.md §6.2: always answer, echoing the id; an unanswered KV op stalls the turn.
        reply = pb.KvClientMessage(id=kv.id)
        case = kv.WhichOneof("message")
        if case == "set_blob_args":
            args = kv.set_blob_args
            blob_id = args.blob_id or hashlib.sha256(args.blob_data).digest()
            self.state.blobs[bytes(blob_id)] = bytes(args.blob_data)
            reply.set_blob_result.SetInParent()
        elif case == "get_blob_args":
            data = self.state.blobs.get(bytes(kv.get_blob_args.blob_id))
            reply.get_blob_result.SetInParent()
            if data is not None:
                reply.get_blob_result.blob_data = data
        else:
            reply.set_blob_result.error.message = "unsupported blob store operation"
        return pb.AgentClientMessage(kv_client_message=reply)

    def _exec(self, ex: pb.ExecServerMessage) -> list[pb.AgentClientMessage]:
        # connect.md §6.1: request context, MCP state and unknown MCP tools get answers; every other
        # exec is declined with throw + stream_close (the SDK's generic decline). exec_id is not echoed.
        close = pb.AgentClientMessage(
            exec_client_control_message=pb.ExecClientControlMessage(
                stream_close=pb.ExecClientStreamClose(id=ex.id)
            )
        )
        which = ex.WhichOneof("message")
        if which == "request_context_args":
            result = pb.ExecClientMessage(id=ex.id)
            result.request_context_result.success.request_context.CopyFrom(
                request_context(self.workspace, system=self.system, tools=self.specs, profile=self.profile)
            )
            return [pb.AgentClientMessage(exec_client_message=result), close]
        if which == "mcp_state_exec_args":
            # live-dialect.md row 9: the caller's tools as one connected MCP server; without it the
            # model starts an MCP sign-in flow instead of calling the tools.
            result = pb.ExecClientMessage(id=ex.id)
            success = result.mcp_state_exec_result.success
            success.SetInParent()
            if self.specs:
                server = success.servers.add(
                    server_name=CUSTOM_TOOLS_PROVIDER,
                    server_identifier=CUSTOM_TOOLS_PROVIDER,
                    status="connected",
                )
                server.tools.extend(_tool_definition(t) for t in self.specs)
            return [pb.AgentClientMessage(exec_client_message=result), close]
        if which == "mcp_args":
            # A tool we did not offer: tool_not_found with the names we have, as the SDK answers,
            # so the model can pick a real one instead of failing the run.
            result = pb.ExecClientMessage(id=ex.id)
            nf = result.mcp_result.tool_not_found
            nf.name = _bare_tool_name(ex.mcp_args)
            nf.available_tools.extend(sorted(self.tools))
            return [pb.AgentClientMessage(exec_client_message=result), close]
        case: str = which or ""
        if not case:
            numbers = [n for n in _unknown_numbers(ex) if n not in (1, 15, 19, 55, 57)]
            case = f"field {numbers[0]}" if numbers else "unknown"
        throw = pb.AgentClientMessage(
            exec_client_control_message=pb.ExecClientControlMessage(
                throw=pb.ExecClientThrow(
                    id=ex.id, error=f"No handler found for server message of type {case}"
                )
            )
        )
        return [throw, close]
