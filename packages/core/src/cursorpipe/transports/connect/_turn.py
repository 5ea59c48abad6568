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
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import json_format, unknown_fields

from ..._proto.agent.v1 import agent_pb2 as pb
from ..._tool_emulation import forced_tool, render_history
from ...errors import ConfigurationError
from ...types import (
    ChatMessage,
    Event,
    ImagePart,
    TextDelta,
    ThinkingDelta,
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
    "ConversationState",
    "HistoryMode",
    "Step",
    "TurnMachine",
    "build_run_request",
    "cancel_message",
    "exec_heartbeat_message",
    "heartbeat_message",
    "mcp_result_messages",
    "offered_tools",
    "tool_choice_instruction",
]

#: How earlier turns and the system prompt of a stateless request reach the model.
#: "structured" (default): ``UserMessageAction.conversation_history`` (7) and
#: ``AgentRunRequest.custom_system_prompt`` (8). "flatten": one user text with role markers.
HistoryMode = Literal["structured", "flatten"]

# connect.md §5.3: UserMessage.mode is AgentMode; ask = 2, plan = 3 (never AGENT: no side effects).
_MODES = {"ask": pb.AGENT_MODE_ASK, "plan": pb.AGENT_MODE_PLAN}

# agent-v1-minimal.md §5: the "minimal decline" per interaction-query case (field number of the
# query oneof == field number of the response oneof). Cases 7, 8, 10-14 are outside wire's proto
# subset on the query side, so they arrive as unknown fields; we still know how to answer them.
_DECLINE_REASON = "cursorpipe is a chat bridge: interactive actions are not supported"


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


def _args_json(args: pb.McpArgs) -> str:
    return json.dumps({k: json_format.MessageToDict(v) for k, v in args.args.items()}, ensure_ascii=False)


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


def _user_message(text: str, images: tuple[ImagePart, ...], mode: str) -> pb.UserMessage:
    msg = pb.UserMessage(text=text, mode=_MODES.get(mode, pb.AGENT_MODE_ASK))
    _selected_images(msg, images)
    return msg


def _history(messages: list[ChatMessage], names: Mapping[str, str] | None = None) -> pb.ConversationHistory:
    """``ConversationHistory`` (agent-v1.schema.txt): user/assistant/tool messages. Assistant tool
    calls become ``ConversationHistoryToolCall{tool_call_id, tool_name, args_json}`` parts and
    ``tool`` messages ``ConversationHistoryToolMessage{tool_call_id, tool_name, content}`` (the
    name looked up from the call when the OpenAI message carries none)."""
    names = dict(names or {})
    hist = pb.ConversationHistory()
    for m in messages:
        item = hist.messages.add()
        if m.role == "assistant":
            if m.text or not m.tool_calls:
                item.assistant.content.add().text.text = m.text
            for call in m.tool_calls:
                tc = item.assistant.content.add().tool_call
                tc.tool_call_id, tc.tool_name, tc.args_json = call.id, call.name, call.arguments or "{}"
                names[call.id] = call.name
        elif m.role == "tool":
            tool = item.tool
            tool.tool_call_id = m.tool_call_id or ""
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


def _flatten(system: str, earlier: list[ChatMessage], last: str, after: Sequence[ChatMessage] = ()) -> str:
    """RA/CC's way (connect.md §5.3): one user text holding the transcript."""
    parts = []
    if system:
        parts.append(f"[System instructions]\n{system}")
    for m in earlier:
        parts.append(f"[{m.role.capitalize()}]\n{m.text}")
    parts.append(f"[User]\n{last}" if parts else last)
    for m in after:
        parts.append(f"[{m.role.capitalize()}]\n{m.text}")
    return "\n\n".join(parts)


def build_run_request(
    request: TurnRequest,
    state: ConversationState,
    *,
    model_id: str,
    run_id: str,
    model_parameters: tuple[tuple[str, str], ...] = (),
    max_mode: bool = False,
    history_mode: HistoryMode = "structured",
    resume: bool = False,
    checkpoint: bytes | None = None,
) -> pb.AgentClientMessage:
    """The first client message of a turn, built as Cursor's SDK builds it (connect.md §5.3,
    agent-v1-minimal.md §9 vector 1): ``conversation_state`` (empty or the last checkpoint, always
    present), the action, ``requested_model{model_id}`` (field 9, not ``model_details``, §5.2),
    empty ``mcp_tools``, a stable ``conversation_id``, ``run_id`` and ``next_interaction_query_id``
    0 (explicitly present).

    History and system prompt (stateless requests; sessions send only the new message):
    ``history_mode="structured"`` (the default) sends earlier turns as
    ``UserMessageAction.conversation_history`` (7) and the system prompt as
    ``AgentRunRequest.custom_system_prompt`` (8). Both are [S]/unverified (connect.md §5.3, §13;
    OMP says field 8 may be allow-listed), but they keep the last user message exact and the roles
    unambiguous (no role markers a user could forge inside the text), they are the schema's own
    fields for this, and the emulator honours them. ``history_mode="flatten"`` is the fallback the
    working third-party clients use (RA, CC): the transcript flattened into the user text.
    """
    run = pb.AgentRunRequest(
        conversation_id=state.conversation_id,
        run_id=run_id,
        next_interaction_query_id=0,
    )
    run.conversation_state.ParseFromString(state.checkpoint if checkpoint is None else checkpoint)
    run.conversation_state.SetInParent()
    run.mcp_tools.SetInParent()
    # The caller's tools travel as MCP tool definitions (issue 7, connect.md §6.1); Cursor's
    # built-in tools stay off (x-cursor-agent-allowed-tools is empty, see transport.py).
    for tool in offered_tools(request):
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
    msgs = list(request.messages)
    system = "\n\n".join(m.text for m in msgs if m.role == "system")
    rule = tool_choice_instruction(request)
    if rule:
        system = f"{system}\n\n{rule}" if system else rule
    convo = [m for m in msgs if m.role != "system"]
    last_user_index = max((i for i, m in enumerate(convo) if m.role == "user"), default=-1)
    if last_user_index < 0:
        raise ConfigurationError("a request needs at least one user message", code="invalid_request")
    last = convo[last_user_index]
    earlier = convo[:last_user_index]
    trailing = convo[last_user_index + 1 :]
    tool_exchange = any(m.role == "tool" or m.tool_calls for m in trailing)
    if trailing and not tool_exchange:
        # Messages after the last user message (e.g. an assistant prefill) cannot be expressed;
        # keep them as history so nothing is lost silently.
        earlier = convo[:last_user_index] + trailing
        trailing = []
    action = run.action.user_message_action
    if history_mode == "flatten" and (system or earlier or trailing):
        # The flattened transcript has no tool structure: tool traffic is rendered as text.
        action.user_message.CopyFrom(
            _user_message(
                _flatten(system, render_history(earlier), last.text, render_history(trailing)),
                last.images,
                request.mode,
            )
        )
    else:
        action.user_message.CopyFrom(_user_message(last.text, last.images, request.mode))
        names = {c.id: c.name for m in convo for c in m.tool_calls}
        if earlier:
            action.conversation_history.CopyFrom(_history(earlier, names))
        if trailing:
            # A stateless (OpenAI-style) tool exchange: the model's tool calls and their `tool`
            # results come AFTER the last user message. They go in
            # UserMessageAction.trailing_conversation_history (8) [G: agent-v1.schema.txt has the
            # field and its name says "after the user message"; no capture shows its use]; the
            # emulator honours it (and, alternatively, tool entries at the end of
            # conversation_history). The model then answers from the results.
            action.trailing_conversation_history.CopyFrom(_history(trailing, names))
        if system:
            run.custom_system_prompt = system
    return pb.AgentClientMessage(run_request=run)


def _minimal_request_context(workspace: str) -> pb.RequestContext:
    """agent-v1-minimal.md §4.1 "minimal answer": env only; rules, tools, MCP and web tools empty."""
    ctx = pb.RequestContext()
    env = ctx.env
    env.os_version = f"{platform.system().lower()} {platform.release()}"
    env.workspace_paths.append(workspace)
    env.shell = os.environ.get("SHELL", "/bin/sh") if os.name != "nt" else "cmd.exe"
    env.time_zone = time.tzname[0] if time.tzname else "UTC"
    env.process_working_directory = workspace
    return ctx


def _unknown_numbers(msg: pb.InteractionQuery | pb.ExecServerMessage) -> list[int]:
    try:
        fields = unknown_fields.UnknownFieldSet(msg)
        return [fields[i].field_number for i in range(len(fields))]
    except (TypeError, ValueError):  # pragma: no cover - defensive: implementation differences
        return []


def _decline_query(query: pb.InteractionQuery) -> pb.AgentClientMessage:
    """Reject every interaction query (connect.md §6.3, agent-v1-minimal.md §5 decline column)."""
    resp = pb.InteractionResponse(id=query.id)
    case = query.WhichOneof("query")
    number = query.DESCRIPTOR.fields_by_name[case].number if case else None
    if number is None:
        known = [n for n in _unknown_numbers(query) if n in {7, 8, 10, 11, 12, 13, 14}]
        number = known[0] if known else None
    reason = _DECLINE_REASON
    if number == 2:
        resp.web_search_request_response.rejected.reason = reason
    elif number == 3:
        resp.ask_question_interaction_response.result.rejected.reason = reason
    elif number == 4:
        resp.switch_mode_request_response.rejected.reason = reason
    elif number == 7:
        resp.create_plan_request_response.result.error.error = reason
    elif number == 8:
        # The schema's SetupVmEnvironmentResult has only `success`; the SDK answers success (§5).
        resp.setup_vm_environment_result.success.SetInParent()
    elif number == 9:
        resp.web_fetch_request_response.rejected.reason = reason
    elif number == 10:
        resp.pr_management_result.error.error = reason
    elif number == 11:
        resp.mcp_auth_request_response.rejected.reason = reason
    elif number == 12:
        resp.generate_image_request_response.rejected.reason = reason
    elif number == 13:
        resp.replace_env_result.failure.error_message = reason
    elif number == 14:
        resp.connect_scm_request_response.rejected.reason = reason
    # An unknown future case still gets an answer with its id: an unanswered query hangs the turn.
    return pb.AgentClientMessage(interaction_response=resp)


class TurnMachine:
    """Answers server messages for one attempt of one turn and turns updates into events."""

    def __init__(
        self,
        state: ConversationState,
        *,
        workspace: str = "",
        base_checkpoint: bytes | None = None,
        tools: Sequence[str] = (),
        stateful: bool = False,
    ) -> None:
        self.state = state
        self.tools = frozenset(tools)
        """Names of the caller's tools offered in ``mcp_tools``; other ``mcp_args`` are declined."""
        self.stateful = stateful
        """True with a ``tool_handler``: tool calls are answered in the turn (``Step.tool_calls``);
        False: the turn ends at the model's tool calls (see :meth:`tool_batch`)."""
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
                # or left open while a stateless turn ends and is cancelled.
                self._mcp_call(ex, step)
            else:
                step.replies.extend(self._exec(ex))
        elif case == "interaction_query":
            step.replies.append(_decline_query(msg.interaction_query))
        elif case == "conversation_checkpoint_update":
            # connect.md §6: keep the latest; not the end of the turn.
            self.checkpoint = msg.conversation_checkpoint_update.SerializeToString()
        # exec_server_control_message (abort): we never run an exec, nothing to cancel.
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
        # heartbeat, token_delta (a count, not text), step/summary updates: nothing to emit.

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
        # connect.md §6.1: request_context_args gets a minimal context; every other exec is
        # declined with throw + stream_close (the SDK's generic decline). exec_id is not echoed.
        close = pb.AgentClientMessage(
            exec_client_control_message=pb.ExecClientControlMessage(
                stream_close=pb.ExecClientStreamClose(id=ex.id)
            )
        )
        which = ex.WhichOneof("message")
        if which == "request_context_args":
            result = pb.ExecClientMessage(id=ex.id)
            result.request_context_result.success.request_context.CopyFrom(
                _minimal_request_context(self.workspace)
            )
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
