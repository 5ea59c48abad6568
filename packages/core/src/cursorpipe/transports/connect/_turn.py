"""The turn as a sans-IO state machine: what to send first, and what to answer to each server
message (connect.md §5-§7, agent-v1-minimal.md §0). No sockets, no asyncio: the channel code feeds
``AgentServerMessage`` objects in and sends the returned ``AgentClientMessage`` replies out.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf import unknown_fields

from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import ConfigurationError
from ...types import (
    ChatMessage,
    Event,
    ImagePart,
    TextDelta,
    ThinkingDelta,
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
    "heartbeat_message",
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


def _image(part: ImagePart) -> bytes:
    if part.data is None:
        raise ConfigurationError(
            "The connect transport sends images inline: pass them as base64 data: URLs "
            "(remote image URLs are not fetched).",
            code="invalid_request",
        )
    return part.data


def _selected_context(images: tuple[ImagePart, ...]) -> bytes:
    """``UserMessage.selected_context`` (3) = ``SelectedContext{1 selected_images[] SelectedImage
    {8 data, 2 uuid, 7 mime_type}}`` (connect.md §5.3, agent-v1.schema.txt). SelectedContext is
    outside wire's proto subset, so it is encoded here as raw protobuf and merged into UserMessage."""
    ctx = b""
    for part in images:
        img = (
            _field_bytes(8, _image(part))
            + _field_bytes(2, str(uuid.uuid4()).encode())
            + _field_bytes(7, part.mime_type.encode())
        )
        ctx += _field_bytes(1, img)
    return _field_bytes(3, ctx)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _user_message(text: str, images: tuple[ImagePart, ...], mode: str) -> pb.UserMessage:
    msg = pb.UserMessage(text=text, mode=_MODES.get(mode, pb.AGENT_MODE_ASK))
    if images:
        msg.MergeFromString(_selected_context(images))
    return msg


def _history(messages: list[ChatMessage]) -> pb.ConversationHistory:
    hist = pb.ConversationHistory()
    for m in messages:
        item = hist.messages.add()
        if m.role == "assistant":
            item.assistant.content.add().text.text = m.text
        elif m.role == "tool":
            tool = item.tool
            tool.tool_call_id = m.tool_call_id or ""
            tool.tool_name = m.name or ""
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


def _flatten(system: str, earlier: list[ChatMessage], last: str) -> str:
    """RA/CC's way (connect.md §5.3): one user text holding the transcript."""
    parts = []
    if system:
        parts.append(f"[System instructions]\n{system}")
    for m in earlier:
        parts.append(f"[{m.role.capitalize()}]\n{m.text}")
    parts.append(f"[User]\n{last}" if parts else last)
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
    convo = [m for m in msgs if m.role != "system"]
    last_user_index = max((i for i, m in enumerate(convo) if m.role == "user"), default=-1)
    if last_user_index < 0:
        raise ConfigurationError("a request needs at least one user message", code="invalid_request")
    last = convo[last_user_index]
    earlier = convo[:last_user_index]
    trailing = convo[last_user_index + 1 :]
    if trailing:
        # Messages after the last user message (e.g. an assistant prefill) cannot be expressed;
        # keep them as history so nothing is lost silently.
        earlier = convo[:last_user_index] + trailing
    action = run.action.user_message_action
    if history_mode == "flatten" and (system or earlier):
        action.user_message.CopyFrom(
            _user_message(_flatten(system, earlier, last.text), last.images, request.mode)
        )
    else:
        action.user_message.CopyFrom(_user_message(last.text, last.images, request.mode))
        if earlier:
            action.conversation_history.CopyFrom(_history(earlier))
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
        self, state: ConversationState, *, workspace: str = "", base_checkpoint: bytes | None = None
    ) -> None:
        self.state = state
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
            step.replies.extend(self._exec(msg.exec_server_message))
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
            step.events.append(TurnEnd("stop", self.usage))
        # heartbeat, token_delta (a count, not text), tool/step/summary updates: nothing to emit.

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
