"""One agent turn as Cursor's backend runs it, independent of the HTTP transport carrying it.

Order (connect.md §5-§7, official-sdk-as-peer.md §3, live-dialect.md rows 1-24): after the
``run_request`` the server applies its refusals (identity, options), stores the system-prompt blob in
the client's KV store (``set_blob``, awaited), fetches the prompt messages and the earlier turns named
by the client-held state (``get_blob``, connect.md §5.5), asks for the request context with an exec
(awaited: result + ``stream_close``), asks ``mcp_state_exec_args`` when tools could reach the model,
optionally sends interaction queries (each must be answered), then streams thinking, then (when the
model sees tools and the behaviour calls some) rounds of tool calls through the MCP exec channel, then
text deltas with token deltas, the checkpoint naming the new turn blob, ``turn_ended`` with usage, the
post-turn ``set_blob`` of that blob, the final checkpoint and the end-stream frame. A
``cancel_action`` before ``turn_ended`` ends the turn.

A tool call (issue 7; the order of the updates is [G], the schema gives the messages but no capture
shows their sequence): ``partial_tool_call`` updates whose ``args_text_delta`` spell the arguments'
JSON (the first already names the tool), ``tool_call_started`` with the full ``McpArgs``, optionally
a ``request_context_args`` exec (connect.md §6.1 [S CC]: once per tool call), then
``exec_server_message{id, mcp_args}``; once every call of the round has its ``mcp_result`` (or
``throw``) and ``stream_close``, a ``tool_call_completed`` per call carrying the result, and the
model goes on (another round, or the answer that depends on the results).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..._codecs.connect import (
    FLAG_END_STREAM,
    ConnectError,
    ConnectErrorDetail,
    encode_envelope,
    encode_error_details,
)
from ..._proto.agent.v1 import agent_pb2
from ._behaviour import (
    Behaviour,
    Fault,
    ReplyContext,
    estimate_tokens,
    reply_for,
)
from ._tools import (
    ToolCallRecord,
    ToolCallScript,
    ToolContext,
    ToolResult,
    default_tool_arguments,
    default_tool_calls,
    expected_tools_reply,
    mcp_result_text,
    tool_definitions,
    tool_name_of,
    tool_schema,
    value_of,
)
from ._view import (
    TOOL_CALL_ID,
    PromptMessage,
    PromptMessageError,
    cli_version_problem,
    mode_name,
    parse_prompt_message,
    pending_prompt_results,
    tools_allowed_by_header,
)

__all__ = ["POST_TURN_TIMEOUT_S", "RunRecord", "TurnIO", "run_turn"]

#: How long the service waits for the acknowledgement of its post-``turn_ended`` ``set_blob`` before
#: it counts the final checkpoint as lost (live-dialect.md row 10; CAS keeps the stream writable
#: 5 s for this work, the service's own bound is unknown [G]).
POST_TURN_TIMEOUT_S = 10.0

SendFn = Callable[[agent_pb2.AgentServerMessage], Awaitable[None]]
EndFn = Callable[[ConnectError | None, Mapping[str, Sequence[str]] | None], Awaitable[None]]
RawFn = Callable[[bytes, bool], Awaitable[None]]

#: Faults that write hand-made (malformed) bytes onto the wire mid-stream instead of a message.
FRAME_FAULTS = frozenset(
    {Fault.TRUNCATED_FRAME, Fault.GARBAGE_FRAME, Fault.BAD_FLAG_FRAME, Fault.BAD_END_STREAM}
)


@dataclass(eq=False)
class TurnIO:
    """The transport half a turn talks through: ``send`` one server message, ``end`` the stream
    (with an optional Connect error), and ``inbound``, the client's messages in order (``None`` when
    the client closed its side or disconnected). ``raw`` writes bytes as they are (``True``: and
    ends the body), for the malformed-frame faults; ``None`` where the wire has no such hook."""

    send: SendFn
    end: EndFn
    inbound: asyncio.Queue[agent_pb2.AgentClientMessage | None]
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    raw: RawFn | None = None


@dataclass
class RunRecord:
    """Everything the emulator saw and did in one run (``Emulator.runs``), for assertions."""

    transport: str
    request_id: str
    headers: dict[str, str]
    run_request: agent_pb2.AgentRunRequest | None = None
    client_messages: list[agent_pb2.AgentClientMessage] = field(default_factory=list)
    client_heartbeats: int = 0
    kv_answers: list[agent_pb2.KvClientMessage] = field(default_factory=list)
    exec_answers: list[agent_pb2.AgentClientMessage] = field(default_factory=list)
    interaction_responses: list[agent_pb2.InteractionResponse] = field(default_factory=list)
    blob_round_trip_ok: bool | None = None
    history: tuple[tuple[str, str], ...] = ()
    system_prompt: str = ""
    reply: str = ""
    thinking: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    fault: Fault | None = None
    outcome: str = "running"
    finished: bool = False
    #: names of the tools the run offered (``mcp_tools``, then the request-context reply), in order
    tools_offered: list[str] = field(default_factory=list)
    #: every tool call the model made, with the client's answer
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    #: the tool results the answer was based on (stateless history first, then this run's)
    tool_results: list[ToolResult] = field(default_factory=list)
    #: the prompt messages read from ``root_prompt_messages_json`` (Cursor's own system blob excluded)
    prompt_messages: list[PromptMessage] = field(default_factory=list)
    #: the request context the client returned (``None`` if not asked or not a success)
    request_context: agent_pb2.RequestContext | None = None
    #: every distinct system text the model saw, in order
    system_texts: list[str] = field(default_factory=list)
    #: the tools the model could call (after the header, mode and MCP-state rules)
    tools_visible: list[str] = field(default_factory=list)
    #: the mode name of the user message (``"agent"``, ``"ask"``, ``"unspecified"`` ...)
    mode: str = ""
    #: the client's answer to ``mcp_state_exec_args`` (``None`` if not asked)
    mcp_state_answer: agent_pb2.AgentClientMessage | None = None
    #: ``(kind, outcome)`` of each interaction query asked
    query_outcomes: list[tuple[str, str]] = field(default_factory=list)
    #: why the run was refused before any output (identity, options), if it was
    refusal: str = ""
    #: the tool-call id that broke the id rule (row 15), if one did
    rejected_tool_call_id: str | None = None
    #: the client reset or closed before acknowledging the post-turn ``set_blob`` (row 10)
    checkpoint_lost: bool = False
    #: the client sent ``cancel_action`` after ``turn_ended`` (a completed turn needs none)
    cancel_after_turn_ended: bool = False


#: ``(requested_model) -> (error, end-stream metadata)`` when ``Run`` refuses that model, else ``None``.
ModelRejection = Callable[
    [agent_pb2.RequestedModel], "tuple[ConnectError, Mapping[str, Sequence[str]]] | None"
]


class _Cancelled(Exception):
    """The client sent cancel_action (or went away): end the turn now."""


class _Gone(Exception):
    """The client disconnected: nothing more can be sent."""


def blob_id(data: bytes) -> bytes:
    """Blob ids are the SHA-256 of the data (connect.md §6.2)."""
    return hashlib.sha256(data).digest()


def _split(text: str, n: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _history_message(msg: agent_pb2.ConversationHistoryMessage) -> PromptMessage | None:
    """A ``conversation_history`` message as a prompt message (read only when
    ``Behaviour.read_conversation_history`` is on)."""
    case = msg.WhichOneof("message")
    if case == "user":
        parts = [c.text.text for c in msg.user.content if c.WhichOneof("content") == "text"]
        return PromptMessage("user", "".join(parts))
    if case == "assistant":
        text = "".join(c.text.text for c in msg.assistant.content if c.WhichOneof("content") == "text")
        calls = []
        for c in msg.assistant.content:
            if c.WhichOneof("content") == "tool_call":
                tc = c.tool_call
                try:
                    args = json.loads(tc.args_json) if tc.args_json else {}
                except ValueError:
                    args = tc.args_json
                calls.append((tc.tool_call_id, tc.tool_name, args))
        return PromptMessage("assistant", text, tuple(calls))
    if case == "tool":
        t = msg.tool
        text = "".join(c.text.text for c in t.content if c.WhichOneof("content") == "text")
        is_error = t.HasField("is_error") and t.is_error
        shown = f"error: {text}" if is_error else text
        result = ToolResult(t.tool_call_id, t.tool_name, shown, is_error, "history")
        return PromptMessage("tool", text, tool_results=(result,))
    return None


def _view_text(m: PromptMessage) -> str:
    """A history entry's text for ``ReplyContext.history``: a tool message shows its result."""
    if m.role == "tool" and m.tool_results:
        return "".join(r.text for r in m.tool_results)
    return m.text


def _bad_tool_call_id(messages: Any) -> str | None:
    for m in messages:
        for cid in [c[0] for c in m.tool_calls] + [r.tool_call_id for r in m.tool_results]:
            if not TOOL_CALL_ID.match(cid):
                return str(cid)
    return None


#: kind → (InteractionQuery field, InteractionResponse field), connect.md §6.3.
_QUERY_FIELDS: dict[str, tuple[str, str]] = {
    "web_search": ("web_search_request_query", "web_search_request_response"),
    "web_fetch": ("web_fetch_request_query", "web_fetch_request_response"),
    "ask_question": ("ask_question_interaction_query", "ask_question_interaction_response"),
    "switch_mode": ("switch_mode_request_query", "switch_mode_request_response"),
    "create_plan": ("create_plan_request_query", "create_plan_request_response"),
    "mcp_auth": ("mcp_auth_request_query", "mcp_auth_request_response"),
    "generate_image": ("generate_image_request_query", "generate_image_request_response"),
    "setup_vm": ("setup_vm_environment_args", "setup_vm_environment_result"),
}
#: A query case no schema knows (live-dialect.md row 12: answer it under the same field number).
_UNKNOWN_QUERY_FIELD = 99


def _outcome(msg: Any, depth: int = 0) -> str:
    """The outcome of an interaction response: the set case of its oneof (``approved``,
    ``rejected``, ``success``, ``error`` ...), looking through a ``result`` wrapper."""
    for oneof in msg.DESCRIPTOR.oneofs:
        which = msg.WhichOneof(oneof.name)
        if which is not None:
            return str(which)
    if depth < 2 and "result" in msg.DESCRIPTOR.fields_by_name:
        inner = msg.result
        if hasattr(inner, "DESCRIPTOR"):
            return _outcome(inner, depth + 1)
    return "empty"


def _top_level_fields(data: bytes) -> list[int]:
    """Field numbers of a serialized message's top-level fields (for cases outside the schema)."""
    out: list[int] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = n = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    try:
        while i < len(data):
            tag = varint()
            out.append(tag >> 3)
            wire = tag & 7
            if wire == 0:
                varint()
            elif wire == 1:
                i += 8
            elif wire == 2:
                i += varint()
            elif wire == 5:
                i += 4
            else:
                break
    except IndexError:
        pass
    return out


class _Turn:
    def __init__(
        self,
        io: TurnIO,
        behaviour: Behaviour,
        record: RunRecord,
        fault: tuple[Fault, Mapping[str, Any]] | None,
        pending_texts: dict[str, str],
        known_models: Callable[[str], bool],
        lost_checkpoints: set[str] | None = None,
        model_rejection: ModelRejection | None = None,
    ) -> None:
        self.io = io
        self.model_rejection = model_rejection
        self.b = behaviour
        self.rec = record
        self.fault: Fault | None = fault[0] if fault else None
        self.fault_args: Mapping[str, Any] = fault[1] if fault else {}
        self.rec.fault = self.fault
        self.pending_texts = pending_texts
        self.known_models = known_models
        self.kv: dict[int, asyncio.Future[agent_pb2.KvClientMessage]] = {}
        self.exec_results: dict[int, asyncio.Future[agent_pb2.AgentClientMessage]] = {}
        self.exec_closed: dict[int, asyncio.Future[None]] = {}
        self.exec_activity: dict[int, float] = {}
        self.exec_heartbeats: dict[int, int] = {}
        self.step = 0
        self.discovered = False
        self.queries: dict[int, asyncio.Future[agent_pb2.InteractionResponse]] = {}
        self.cancelled = asyncio.Event()
        self.client_closed = asyncio.Event()
        self.next_kv = 1
        self.next_exec = 1
        self.next_query = 0
        self.ended = False
        self.turn_done = False
        self.lost_checkpoints: set[str] = lost_checkpoints if lost_checkpoints is not None else set()

    # -- inbound -----------------------------------------------------------------------------
    async def dispatch(self) -> None:
        while True:
            msg = await self.io.inbound.get()
            if msg is None:
                self.client_closed.set()
                return
            self.rec.client_messages.append(msg)
            case = msg.WhichOneof("message")
            if case == "client_heartbeat":
                self.rec.client_heartbeats += 1
            elif case == "kv_client_message":
                kv = msg.kv_client_message
                self.rec.kv_answers.append(kv)
                fut = self.kv.get(kv.id)
                if fut is not None and not fut.done():
                    fut.set_result(kv)
            elif case == "exec_client_message":
                self.rec.exec_answers.append(msg)
                res = self.exec_results.get(msg.exec_client_message.id)
                if res is not None and not res.done():
                    res.set_result(msg)
            elif case == "exec_client_control_message":
                self.rec.exec_answers.append(msg)
                ctl = msg.exec_client_control_message
                which = ctl.WhichOneof("message")
                if which == "throw":
                    res = self.exec_results.get(ctl.throw.id)
                    if res is not None and not res.done():
                        res.set_result(msg)
                elif which == "stream_close":
                    closed = self.exec_closed.get(ctl.stream_close.id)
                    if closed is not None and not closed.done():
                        closed.set_result(None)
                elif which == "heartbeat" and ctl.heartbeat.id in self.exec_activity:
                    # connect.md §6.4: the client heartbeats a running exec every 3 s; a tool that
                    # is still running is not a lost answer.
                    self.exec_activity[ctl.heartbeat.id] = time.monotonic()
                    self.exec_heartbeats[ctl.heartbeat.id] = self.exec_heartbeats.get(ctl.heartbeat.id, 0) + 1
            elif case == "interaction_response":
                resp = msg.interaction_response
                self.rec.interaction_responses.append(resp)
                q = self.queries.get(resp.id)
                if q is not None and not q.done():
                    q.set_result(resp)
            elif (
                case == "conversation_action"
                and msg.conversation_action.WhichOneof("action") == "cancel_action"
            ):
                if self.turn_done:
                    # Nothing left to cancel: the service finishes its post-turn work (row 10).
                    self.rec.cancel_after_turn_ended = True
                else:
                    self.cancelled.set()
            # run_request twice, prewarm, unknown cases: recorded above, otherwise ignored.

    # -- outbound ----------------------------------------------------------------------------
    async def send(self, msg: agent_pb2.AgentServerMessage) -> None:
        if self.io.disconnected.is_set():
            raise _Gone
        if self.cancelled.is_set():
            raise _Cancelled
        await self.io.send(msg)

    async def update(self, **kwargs: dict[str, Any]) -> None:
        msg = agent_pb2.AgentServerMessage()
        for name, value in kwargs.items():
            target = getattr(msg.interaction_update, name)
            for k, v in value.items():
                setattr(target, k, v)
            target.SetInParent()
        await self.send(msg)

    async def heartbeat(self) -> None:
        await self.update(heartbeat={})

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up for cancel/disconnect; heartbeats at the configured interval."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = left if self.b.heartbeat_interval_s is None else min(left, self.b.heartbeat_interval_s)
            await self._race(asyncio.sleep(step))
            if self.b.heartbeat_interval_s is not None and deadline - time.monotonic() > 0:
                await self.heartbeat()

    async def _race(self, aw: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(aw)
        cancel = asyncio.ensure_future(self.cancelled.wait())
        gone = asyncio.ensure_future(self.io.disconnected.wait())
        try:
            await asyncio.wait({task, cancel, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (cancel, gone):
                t.cancel()
        if task.done():
            return task.result()
        task.cancel()
        if self.io.disconnected.is_set():
            raise _Gone
        raise _Cancelled

    async def wait_answer(self, fut: asyncio.Future[Any]) -> Any:
        """Wait for the client's answer; a server that gets none never ends the turn (connect.md §6.2),
        so neither do we, but heartbeats keep flowing when configured."""
        while True:
            if self.b.heartbeat_interval_s is None:
                return await self._race(fut)
            try:
                return await self._race(asyncio.wait_for(asyncio.shield(fut), self.b.heartbeat_interval_s))
            except TimeoutError:
                await self.heartbeat()

    async def kv_set(self, data: bytes) -> bytes:
        kid, self.next_kv = self.next_kv, self.next_kv + 1
        fut: asyncio.Future[agent_pb2.KvClientMessage] = asyncio.get_running_loop().create_future()
        self.kv[kid] = fut
        bid = blob_id(data)
        msg = agent_pb2.AgentServerMessage()
        msg.kv_server_message.id = kid
        msg.kv_server_message.set_blob_args.blob_id = bid
        msg.kv_server_message.set_blob_args.blob_data = data
        await self.send(msg)
        await self.wait_answer(fut)
        return bid

    async def kv_get(self, bid: bytes) -> bytes | None:
        kid, self.next_kv = self.next_kv, self.next_kv + 1
        fut: asyncio.Future[agent_pb2.KvClientMessage] = asyncio.get_running_loop().create_future()
        self.kv[kid] = fut
        msg = agent_pb2.AgentServerMessage()
        msg.kv_server_message.id = kid
        msg.kv_server_message.get_blob_args.blob_id = bid
        await self.send(msg)
        ans: agent_pb2.KvClientMessage = await self.wait_answer(fut)
        res = ans.get_blob_result
        return res.blob_data if res.HasField("blob_data") else None

    async def exec(self, fill: Callable[[agent_pb2.ExecServerMessage], None]) -> agent_pb2.AgentClientMessage:
        eid = await self.exec_send(fill)
        answer: agent_pb2.AgentClientMessage = await self.wait_answer(self.exec_results[eid])
        await self.wait_answer(self.exec_closed[eid])
        return answer

    async def exec_send(self, fill: Callable[[agent_pb2.ExecServerMessage], None]) -> int:
        """Send an exec without waiting for its answer; returns its id."""
        eid, self.next_exec = self.next_exec, self.next_exec + 1
        loop = asyncio.get_running_loop()
        self.exec_results[eid] = loop.create_future()
        self.exec_closed[eid] = loop.create_future()
        msg = agent_pb2.AgentServerMessage()
        msg.exec_server_message.id = eid
        msg.exec_server_message.exec_id = str(uuid.uuid4())
        fill(msg.exec_server_message)
        await self.send(msg)
        return eid

    async def exec_wait_bounded(self, eid: int, idle_limit_s: float) -> agent_pb2.AgentClientMessage | None:
        """The answer (result + ``stream_close``) to exec ``eid``, or ``None`` once ``idle_limit_s``
        seconds passed since it was sent or since the client's last exec heartbeat for it."""
        self.exec_activity.setdefault(eid, time.monotonic())
        res, closed = self.exec_results[eid], self.exec_closed[eid]
        hb = self.b.heartbeat_interval_s
        while not (res.done() and closed.done()):
            left = idle_limit_s - (time.monotonic() - self.exec_activity[eid])
            if left <= 0:
                return None
            step = left if hb is None else min(left, hb)
            await self._race(asyncio.wait({res, closed}, timeout=step))
            if not (res.done() and closed.done()) and hb is not None:
                await self.heartbeat()
        return res.result()

    async def query(self, kind: str) -> str | None:
        """Send one interaction query and wait for its answer; the outcome, or ``None`` if the
        answer came under another field number (the turn then ended with ``invalid_argument``)."""
        if kind not in _QUERY_FIELDS and kind != "unknown":
            raise ValueError(f"unknown interaction query kind {kind!r}")
        qid, self.next_query = self.next_query, self.next_query + 1
        fut: asyncio.Future[agent_pb2.InteractionResponse] = asyncio.get_running_loop().create_future()
        self.queries[qid] = fut
        msg = agent_pb2.AgentServerMessage()
        q = msg.interaction_query
        q.id = qid
        if kind == "unknown":
            q.MergeFromString(_ld(_UNKNOWN_QUERY_FIELD, b""))
        else:
            getattr(q, _QUERY_FIELDS[kind][0]).SetInParent()
        await self.send(msg)
        resp: agent_pb2.InteractionResponse = await self.wait_answer(fut)
        if kind == "unknown":
            got = resp.WhichOneof("result")
            if got is None and _UNKNOWN_QUERY_FIELD in _top_level_fields(resp.SerializeToString()):
                return "answered"
        else:
            want = _QUERY_FIELDS[kind][1]
            got = resp.WhichOneof("result")
            if got == want:
                return _outcome(getattr(resp, want))
        await self.fail(
            "invalid_argument",
            f"emulator: interaction query {qid} ({kind}) was answered with {got or 'another field'}, "
            "expected the response under the query's field number (connect.md §6.3)",
        )
        return None

    async def fail(self, code: str, message: str, detail_enum: int | None = None, **kw: Any) -> None:
        details: tuple[ConnectErrorDetail, ...] = ()
        if detail_enum is not None:
            details = (
                encode_error_details(
                    detail_enum,
                    title=kw.pop("title", ""),
                    detail=kw.pop("detail", ""),
                    is_retryable=kw.pop("is_retryable", None),
                    is_expected=True,
                ),
            )
        await self.io.end(ConnectError(code, message, details), kw.pop("metadata", None))
        self.ended = True
        self.rec.outcome = f"error:{code}"

    # -- the turn ----------------------------------------------------------------------------
    async def run(self, first: agent_pb2.AgentClientMessage) -> None:
        self.rec.client_messages.append(first)
        if first.WhichOneof("message") != "run_request":
            got = first.WhichOneof("message")
            await self.fail("invalid_argument", f"the first client message must be run_request, not {got}")
            return
        req = first.run_request
        self.rec.run_request = req
        if await self._fault_before_output(req):
            return
        if await self._gates(req):
            return
        action = req.action
        case = action.WhichOneof("action")
        if case == "user_message_action":
            text = action.user_message_action.user_message.text
            self.pending_texts[req.run_id] = text
        elif case == "resume_action":
            # connect.md §8.3: a retry resumes the same run (same run_id) from the checkpoint.
            if req.run_id not in self.pending_texts:
                await self.fail("invalid_argument", "resume_action for a run this server does not know")
                return
            text = self.pending_texts[req.run_id]
        else:
            await self.fail("invalid_argument", f"unsupported conversation action {case!r}")
            return

        state = req.conversation_state
        custom = req.custom_system_prompt if req.HasField("custom_system_prompt") else ""
        self.rec.system_prompt = custom
        if (
            self.b.post_turn_blob
            and state.turns
            and req.conversation_id
            and req.conversation_id in self.lost_checkpoints
        ):
            # The client dropped the previous run's stream after turn_ended: its final set_blob was
            # never stored, so the checkpoint it holds names a blob it does not have (row 10).
            self.lost_checkpoints.discard(req.conversation_id)
            await self.fail("internal", "Blob not found")
            return

        # 1. System-prompt blob into the client's store (official-sdk-as-peer.md §3 step 2, CT capture).
        system_doc = json.dumps({"role": "system", "content": self.b.system_prompt_blob}).encode()
        system_blob = await self.kv_set(system_doc)

        # 2. What the live service reads back: the prompt messages, then the checkpoint's turns, both
        #    from the client's store (live-dialect.md rows 3-4; connect.md §5.5).
        roots: list[tuple[bytes, PromptMessage]] = []
        for bid in state.root_prompt_messages_json:
            data = await self.kv_get(bid)
            if data is None:
                await self.fail("internal", "Blob not found")
                return
            if bid == system_blob:
                continue  # Cursor's own system prompt, echoed back in the checkpoint
            try:
                roots.append((bid, parse_prompt_message(data)))
            except PromptMessageError as exc:
                await self.fail("invalid_argument", f"emulator: invalid root prompt message: {exc}")
                return
        self.rec.prompt_messages = [m for _, m in roots]
        sequence: list[PromptMessage] = [m for _, m in roots if m.role != "system"]
        for bid in state.turns:
            data = await self.kv_get(bid)
            if data is None:
                await self.fail("internal", "Blob not found")
                return
            try:
                turn_doc = json.loads(data)
                sequence += [
                    PromptMessage("user", str(turn_doc["user"])),
                    PromptMessage("assistant", str(turn_doc["assistant"])),
                ]
            except (ValueError, KeyError, TypeError):
                await self.fail("data_loss", "emulator: a turn blob from the client store is corrupt")
                return
        checkpoint_turns = len(state.turns)
        uma = action.user_message_action
        if self.b.read_conversation_history:
            sequence += [pm for pm in map(_history_message, uma.conversation_history.messages) if pm]
        if self.b.strict_tool_call_ids:
            bad = _bad_tool_call_id(sequence)
            if bad is not None:
                # row 15: the live service answers an id outside the pattern with a bare error.
                self.rec.rejected_tool_call_id = bad
                await self.fail("resource_exhausted", "Error")
                return

        if self.b.blob_round_trip:
            probe = f"emulator probe blob for run {req.run_id}".encode()
            pid = await self.kv_set(probe)
            back = await self.kv_get(pid)
            missing = await self.kv_get(blob_id(b"never stored " + uuid.uuid4().bytes))
            self.rec.blob_round_trip_ok = back == probe and missing is None

        # 3. Request context exec (connect.md §6.1), then optional extra exec.
        context: agent_pb2.RequestContext | None = None
        if self.b.request_context:
            answer = await self.exec(lambda m: m.request_context_args.SetInParent())
            result = answer.exec_client_message.request_context_result
            if result.WhichOneof("result") == "success":
                context = result.success.request_context
        self.rec.request_context = context
        if self.b.extra_exec is not None:
            spec = self.b.extra_exec

            def fill_mcp(m: agent_pb2.ExecServerMessage) -> None:
                m.mcp_args.name = str(spec.get("name", "emulator-tool"))
                m.mcp_args.tool_name = str(spec.get("tool_name", spec.get("name", "emulator-tool")))
                m.mcp_args.tool_call_id = str(spec.get("tool_call_id", uuid.uuid4()))
                m.mcp_args.provider_identifier = str(spec.get("provider_identifier", "emulator"))
                for k, v in dict(spec.get("args", {})).items():
                    m.mcp_args.args[k].string_value = str(v)

            await self.exec(fill_mcp)

        # 4. The system text: custom prompt (when accepted), cloud rule, global rules, system entries.
        system_texts: list[str] = [custom] if custom else []
        if context is not None:
            if context.HasField("cloud_rule"):
                system_texts.append(context.cloud_rule)
            system_texts += [r.content for r in context.rules if r.type.WhichOneof("type") == "global"]
        system_texts += [m.text for _, m in roots if m.role == "system"]
        system_texts = list(dict.fromkeys(t for t in system_texts if t))
        self.rec.system_texts = list(system_texts)

        # 5. Tools: offered in mcp_tools or the request-context reply, let through by the allowed-tools
        #    header and the mode (rows 6-8), listed by a connected MCP server (row 9).
        offered = tool_definitions(req)
        for d in context.tools if context is not None else ():
            for key in (d.tool_name, d.name):
                if key and key not in offered:
                    offered[key] = d
        self.rec.tools_offered = list(dict.fromkeys(tool_name_of(d) for d in offered.values()))
        mode = uma.user_message.mode
        self.rec.mode = mode_name(mode)
        visible = dict(offered)
        if self.b.tool_gates and (
            not tools_allowed_by_header(self.rec.headers) or mode == agent_pb2.AGENT_MODE_ASK
        ):
            visible = {}
        if visible and self.b.mcp_state:
            visible = await self._mcp_state(visible)
        self.rec.tools_visible = list(dict.fromkeys(tool_name_of(d) for d in visible.values()))

        queries = self.b.interaction_query
        for kind in [queries] if isinstance(queries, str) else list(queries or ()):
            outcome = await self.query(kind)
            if outcome is None:
                return
            self.rec.query_outcomes.append((kind, outcome))

        # 6. The model's output: thinking, tool calls (issue 7), the answer. A stateless tool exchange
        #    (OpenAI style) ends the prompt messages with the model's tool calls and their results
        #    after the last user message; the model then answers from those results. The current
        #    user message continues that exchange when it is empty or repeats that last user message
        #    [G: where peers put the user text of a tool continuation is unrecorded].
        pending, prior_rounds, last_user = pending_prompt_results(sequence)
        repeats = last_user >= 0 and sequence[last_user].text == text
        continuing = bool(pending) and (not text.strip() or repeats)
        current = PromptMessage("user", text)
        if text.strip() and not continuing:
            sequence.append(current)
            pending, prior_rounds = (), 0
        if self.b.read_conversation_history:
            trailing = [pm for pm in map(_history_message, uma.trailing_conversation_history.messages) if pm]
            sequence += trailing
            t_pending, t_rounds, t_last = pending_prompt_results(sequence)
            if t_pending and t_last < len(sequence) - len(trailing):
                pending, prior_rounds = t_pending, t_rounds
        history = [(m.role, _view_text(m)) for m in sequence if m is not current]
        self.rec.history = tuple(history)
        ctx = ReplyContext(
            text=text,
            turn=checkpoint_turns + 1,
            history=tuple(history),
            system_prompt="\n".join(system_texts),
            model=req.requested_model.model_id or req.model_details.model_id,
            run_request=req,
            system_texts=tuple(system_texts),
            tools=tuple(self.rec.tools_visible),
            mode=self.rec.mode,
            queries=tuple(self.rec.query_outcomes),
        )
        thinking = self.b.thinking(ctx) if callable(self.b.thinking) else self.b.thinking
        self.rec.thinking = thinking

        first_delay = self.b.first_token_delay_s
        token_delay = self.b.token_delay_s
        if self.fault is Fault.SLOW_FIRST_TOKEN:
            first_delay = float(self.fault_args.get("seconds", 2.0))
        if self.fault is Fault.TOKEN_DELAY:
            token_delay = float(self.fault_args.get("seconds", 0.2))

        self.step = 1
        await self.update(step_started={"step_id": self.step})
        if ctx.model in ("auto", "default", "") and self.b.routed_model:
            await self.update(routed_model={"display_name": self.b.routed_model})
        for _ in range(self.b.heartbeats):
            await self.heartbeat()
        if first_delay > 0:
            await self.sleep(first_delay)
        started = time.monotonic()
        for piece in _split(thinking, self.b.chunks):
            await self.update(thinking_delta={"text": piece})
        if thinking:
            await self.update(
                thinking_completed={"thinking_duration_ms": int((time.monotonic() - started) * 1000)}
            )
        results = list(pending)
        self.rec.tool_results = results
        if visible and not await self._tool_phase(ctx, visible, results, prior_rounds, bool(pending)):
            return
        ctx = dataclasses.replace(ctx, tool_results=tuple(results))
        if self.b.reply is None:
            reply = expected_tools_reply(results) if results else reply_for(ctx)
        elif callable(self.b.reply):
            reply = self.b.reply(ctx)
        else:
            reply = self.b.reply
        self.rec.reply = reply
        roots_out = [system_blob, *(bid for bid, _ in roots)]
        pieces = _split(reply, self.b.chunks)
        for i, piece in enumerate(pieces):
            if i > 0 and token_delay > 0:
                await self.sleep(token_delay)
            await self.update(text_delta={"text": piece})
            await self.update(token_delta={"tokens": estimate_tokens(piece)})
            if i == 0 and self.fault is Fault.STALL:
                self.rec.outcome = "stalled"
                seconds = self.fault_args.get("seconds")
                # Silence: no heartbeats either (connect.md §6.4: the client's stall detector fires).
                await self._race(
                    asyncio.sleep(float(seconds)) if seconds is not None else asyncio.Event().wait()
                )
            if i == len(pieces) // 2 and self.fault is Fault.DROP_MID_STREAM:
                await self._checkpoint(roots_out, list(state.turns), state_tokens=0)
                await self.io.end(None, None)  # clean end-stream without turn_ended
                self.ended = True
                self.rec.outcome = "dropped"
                return
            if i == len(pieces) // 2 and self.fault in FRAME_FAULTS:
                await self._malformed_frame()
                return
        await self.update(
            step_completed={
                "step_id": self.step,
                "step_duration_ms": int((time.monotonic() - started) * 1000),
            }
        )

        # 7. Store the turn in the client's store, checkpoint, usage, end.
        turn_doc = json.dumps({"user": text, "assistant": reply}).encode()
        prompt_chars = self.b.system_prompt_blob + "".join(system_texts) + text
        prompt_chars += "".join(t for _, t in history)
        prompt_chars += "".join(d.name + d.description + d.input_schema_json for d in visible.values())
        prompt_chars += "".join(r.text for r in results)
        calls_text = "".join(c.name + json.dumps(c.arguments) for c in self.rec.tool_calls)
        usage = self._usage(prompt_chars, reply + calls_text, thinking)
        tokens = usage["input_tokens"] + usage["output_tokens"]
        if self.b.placeholder_user_roots and any(m.role == "user" for _, m in roots):
            placeholder = await self.kv_set(json.dumps({"role": "user", "content": ""}).encode())
            roots_out = [system_blob, *(placeholder if m.role == "user" else bid for bid, m in roots)]
        if not self.b.post_turn_blob:
            turn_blob = await self.kv_set(turn_doc)
            await self._checkpoint(roots_out, [*state.turns, turn_blob], tokens)
            await self._turn_ended(usage)
            await self._finish(req)
            return
        turns_out = [*state.turns, blob_id(turn_doc)]
        # Row 10: the checkpoint streamed during the turn already names the turn blob, which the
        # service stores only after turn_ended; a client that resets the stream at turn_ended keeps
        # a checkpoint naming a blob it never received.
        await self._checkpoint(roots_out, turns_out, tokens)
        await self._turn_ended(usage)
        self.turn_done = True
        if not await self._post_turn_set(turn_doc):
            self.rec.checkpoint_lost = True
            if req.conversation_id:
                self.lost_checkpoints.add(req.conversation_id)
            self.pending_texts.pop(req.run_id, None)
            self.rec.outcome = "checkpoint_lost"
            if not self.io.disconnected.is_set():
                await self.io.end(None, None)
            self.ended = True
            return
        await self._checkpoint(roots_out, turns_out, tokens)
        await self._finish(req)

    async def _finish(self, req: agent_pb2.AgentRunRequest) -> None:
        self.pending_texts.pop(req.run_id, None)
        await self.io.end(None, None)
        self.ended = True
        self.rec.outcome = "completed"

    async def _post_turn_set(self, data: bytes) -> bool:
        """The post-``turn_ended`` ``set_blob``: ``True`` once the client acknowledged it; ``False``
        if the client reset the stream, closed its side or stayed silent for ``POST_TURN_TIMEOUT_S``."""
        kid, self.next_kv = self.next_kv, self.next_kv + 1
        fut: asyncio.Future[agent_pb2.KvClientMessage] = asyncio.get_running_loop().create_future()
        self.kv[kid] = fut
        msg = agent_pb2.AgentServerMessage()
        msg.kv_server_message.id = kid
        msg.kv_server_message.set_blob_args.blob_id = blob_id(data)
        msg.kv_server_message.set_blob_args.blob_data = data
        if self.io.disconnected.is_set() or self.client_closed.is_set():
            return False
        try:
            await self.io.send(msg)
        except Exception:  # the transport is gone: the blob never reached the client
            return False
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self.client_closed.wait()),
            asyncio.ensure_future(self.io.disconnected.wait()),
        }
        try:
            await asyncio.wait(
                {fut, *waiters}, timeout=POST_TURN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        return fut.done() and not fut.result().set_blob_result.HasField("error")

    async def _gates(self, req: agent_pb2.AgentRunRequest) -> bool:
        """The live service's refusals before any output (rows 1, 2, 24); ``True`` if the run ended."""
        headers = self.rec.headers
        client_type = headers.get("x-cursor-client-type", "")
        if client_type == "cli" and self.b.min_cli_version:
            problem = cli_version_problem(headers.get("x-cursor-client-version", ""), self.b.min_cli_version)
            if problem is not None:
                self.rec.refusal = problem
                await self.fail(
                    "permission_denied",
                    "Error",
                    30,  # ERROR_OUTDATED_CLIENT
                    title="Outdated client",
                    detail=f"Please update Cursor ({problem}).",
                    is_retryable=False,
                )
                return True
        if client_type == "sdk" and not self.b.sdk_client_allowed:
            self.rec.refusal = "sdk client type not allowed"
            await self.fail(
                "permission_denied",
                "Error",
                38,  # ERROR_UNAUTHORIZED
                title="SDK access is not enabled",
                detail="This account may not use the sdk client type.",
                is_retryable=False,
            )
            return True
        if self.b.reject_exclude_workspace_context and req.exclude_workspace_context:
            self.rec.refusal = "exclude_workspace_context"
            await self.fail("invalid_argument", "Workspace context exclusion is not allowed")
            return True
        if req.HasField("custom_system_prompt"):
            allowed = self.b.custom_system_prompt == "always" or (
                self.b.custom_system_prompt == "sdk" and client_type == "sdk"
            )
            if not allowed:
                self.rec.refusal = "custom_system_prompt"
                await self.fail("invalid_argument", "unknown option '--system-prompt'")
                return True
        return False

    async def _mcp_state(
        self, visible: dict[str, agent_pb2.McpToolDefinition]
    ) -> dict[str, agent_pb2.McpToolDefinition]:
        """Ask ``mcp_state_exec_args`` (row 9) and keep the tools a connected server lists."""
        providers = sorted({d.provider_identifier for d in visible.values() if d.provider_identifier})
        answer = await self.exec(lambda m: m.mcp_state_exec_args.server_identifiers.extend(providers))
        self.rec.mcp_state_answer = answer
        result = answer.exec_client_message.mcp_state_exec_result
        if answer.WhichOneof("message") != "exec_client_message" or result.WhichOneof("result") != "success":
            return {}
        listed: set[str] = set()
        for server in result.success.servers:
            # Cursor's own SDK lists its custom-tools server without a status (seen in the
            # conformance test); S2A sends "connected". Any other status is a server the model
            # cannot use yet (row 9: it starts an authentication flow instead).
            if not server.HasField("status") or server.status.lower() == "connected":
                for t in server.tools:
                    listed.update(n for n in (t.tool_name, t.name) if n)
        return {k: d for k, d in visible.items() if tool_name_of(d) in listed or d.name in listed}

    # -- tool calls (issue 7) ---------------------------------------------------------------
    async def _tool_phase(
        self,
        ctx: ReplyContext,
        offered: dict[str, agent_pb2.McpToolDefinition],
        results: list[ToolResult],
        prior_rounds: int,
        stateless: bool,
    ) -> bool:
        """Rounds of tool calls until the script (or the default rule) has none left; ``False`` if
        the turn ended here (a tool result never came)."""
        spec = self.b.tool_calls
        round_no = prior_rounds + 1
        for _ in range(max(0, self.b.max_tool_rounds)):
            tctx = ToolContext(
                ctx.text, round_no, offered, tuple(results), ctx.system_prompt, ctx.run_request
            )
            calls: list[ToolCallScript]
            try:
                if spec is None:
                    auto = self.b.auto_tool_calls and not stateless and round_no == 1
                    calls = default_tool_calls(offered, ctx.text, ctx.system_prompt) if auto else []
                elif callable(spec):
                    calls = list(spec(tctx) or ())
                else:
                    calls = list(spec) if round_no == 1 and not stateless else []
            except Exception as exc:  # a broken test script must end the turn visibly, not hang it
                await self.fail("internal", f"emulator: the tool-call script failed: {exc!r}")
                return False
            if not calls:
                return True
            if not await self._tool_round(calls, round_no, offered, ctx.text, results):
                return False
            round_no += 1
        return True

    def _fill_args(
        self, args: agent_pb2.McpArgs, rec: ToolCallRecord, d: agent_pb2.McpToolDefinition | None, full: bool
    ) -> None:
        # As offered (the official SDK's executor takes tool_name, else name minus its
        # "custom-user-tools-" prefix: cursor-sdk 1.1.0 804.js).
        args.name = (d.name or d.tool_name) if d is not None else rec.name
        args.tool_name = tool_name_of(d) if d is not None else rec.name
        args.tool_call_id = rec.call_id
        args.provider_identifier = d.provider_identifier if d is not None else ""
        if full:
            for k, v in rec.arguments.items():
                args.args[k].CopyFrom(value_of(v))

    def _tool_update(
        self, kind: str, rec: ToolCallRecord, d: agent_pb2.McpToolDefinition | None, *, full: bool = True
    ) -> agent_pb2.AgentServerMessage:
        msg = agent_pb2.AgentServerMessage()
        upd = getattr(msg.interaction_update, kind)
        upd.call_id = rec.call_id
        upd.model_call_id = rec.call_id
        upd.tool_call.tool_call_id = rec.call_id
        self._fill_args(upd.tool_call.mcp_tool_call.args, rec, d, full)
        if d is not None and d.description:
            upd.tool_call.mcp_tool_call.description = d.description
        return msg

    async def _tool_round(
        self,
        calls: list[ToolCallScript],
        round_no: int,
        offered: dict[str, agent_pb2.McpToolDefinition],
        text: str,
        results: list[ToolResult],
    ) -> bool:
        prefix = (self.rec.run_request.run_id if self.rec.run_request else "")[:8] or "emu"
        round_recs: list[tuple[ToolCallRecord, agent_pb2.McpToolDefinition | None, ToolCallScript]] = []
        for call in calls:
            d = offered.get(call.name)
            try:
                args = (
                    dict(call.arguments)
                    if call.arguments is not None
                    else default_tool_arguments(tool_schema(d) if d is not None else {}, text, call.name)
                )
                json.dumps(args)  # the arguments travel as JSON text and google.protobuf.Value
            except (TypeError, ValueError, RecursionError) as exc:
                await self.fail(
                    "internal", f"emulator: arguments for tool {call.name!r} are not JSON: {exc!r}"
                )
                return False
            n = len(self.rec.tool_calls) + 1
            rec = ToolCallRecord(
                call_id=call.call_id or f"call_{prefix}_{n}",
                name=tool_name_of(d) if d is not None else call.name,
                arguments=args,
                exec_id=0,
                round=round_no,
                offered=d is not None,
            )
            self.rec.tool_calls.append(rec)
            round_recs.append((rec, d, call))
        if self.b.tool_preamble and round_no == 1:
            await self.update(text_delta={"text": self.b.tool_preamble})
        if self.b.meta_tool_discovery and not self.discovered:
            self.discovered = True
            await self._discovery_updates(prefix, round_recs)
        # The model streams each call: argument deltas, then the complete call.
        for rec, d, call in round_recs:
            args_json = json.dumps(rec.arguments)
            for piece in _split(args_json, call.args_chunks):
                msg = self._tool_update("partial_tool_call", rec, d, full=False)
                msg.interaction_update.partial_tool_call.args_text_delta = piece
                await self.send(msg)
            msg = self._tool_update("tool_call_started", rec, d)
            msg.interaction_update.tool_call_started.tool_call.started_at_ms = int(time.time() * 1000)
            await self.send(msg)
        if self.b.request_context_per_tool_call and self.b.request_context:
            for _ in round_recs:
                await self.exec(lambda m: m.request_context_args.SetInParent())
        # Parallel calls: every exec goes out before any answer is awaited.
        for rec, d, _call in round_recs:

            def fill(m: agent_pb2.ExecServerMessage, rec: ToolCallRecord = rec, d: Any = d) -> None:
                self._fill_args(m.mcp_args, rec, d, True)

            rec.exec_id = await self.exec_send(fill)
            self.exec_activity[rec.exec_id] = time.monotonic()
        for rec, d, _call in round_recs:
            answer = await self.exec_wait_bounded(rec.exec_id, self.b.tool_result_timeout_s)
            rec.exec_heartbeats = self.exec_heartbeats.get(rec.exec_id, 0)
            rec.stream_closed = self.exec_closed[rec.exec_id].done()
            if answer is None:
                await self._tool_timeout(rec, [r for r, _, _ in round_recs])
                return False
            tool_result = agent_pb2.McpToolResult()
            if answer.WhichOneof("message") == "exec_client_control_message":
                rec.outcome = "throw"
                rec.result_text = f"error: {answer.exec_client_control_message.throw.error}"
                tool_result.error.error = answer.exec_client_control_message.throw.error
                is_error = True
            elif answer.exec_client_message.WhichOneof("message") == "mcp_result":
                rec.result = answer.exec_client_message.mcp_result
                rec.outcome = "result"
                rec.result_text, is_error = mcp_result_text(rec.result)
                _to_tool_result(rec.result, rec.result_text, tool_result)
            else:
                rec.outcome = "invalid"
                got = answer.exec_client_message.WhichOneof("message")
                await self.fail(
                    "invalid_argument",
                    f"emulator: exec {rec.exec_id} (mcp_args for tool call {rec.call_id}) was answered "
                    f"with {got}, expected mcp_result (connect.md §6.1)",
                )
                return False
            results.append(ToolResult(rec.call_id, rec.name, rec.result_text, is_error, "exec"))
            msg = self._tool_update("tool_call_completed", rec, d)
            tc = msg.interaction_update.tool_call_completed.tool_call
            tc.mcp_tool_call.result.CopyFrom(tool_result)
            tc.completed_at_ms = int(time.time() * 1000)
            await self.send(msg)
        await self.update(step_completed={"step_id": self.step, "step_duration_ms": 0})
        self.step += 1
        await self.update(step_started={"step_id": self.step})
        return True

    async def _discovery_updates(
        self,
        prefix: str,
        round_recs: list[tuple[ToolCallRecord, agent_pb2.McpToolDefinition | None, ToolCallScript]],
    ) -> None:
        providers = sorted(
            {d.provider_identifier for _, d, _ in round_recs if d is not None and d.provider_identifier}
        )
        call_id = f"call_{prefix}_discover"
        # GetMcpToolsToolCall{1 args: GetMcpToolsArgs{1 server, 4 tool_call_id}} in ToolCall field 44
        # (agent-v1.schema.txt), hand-encoded because it is outside cursorpipe's proto subset.
        args = _ld(1, (providers[0] if providers else "").encode()) + _ld(4, call_id.encode())
        payload = _ld(44, _ld(1, args))
        for kind in ("tool_call_started", "tool_call_completed"):
            msg = agent_pb2.AgentServerMessage()
            upd = getattr(msg.interaction_update, kind)
            upd.call_id = upd.model_call_id = call_id
            upd.tool_call.MergeFromString(payload)
            upd.tool_call.tool_call_id = call_id
            await self.send(msg)

    async def _tool_timeout(self, rec: ToolCallRecord, round_recs: list[ToolCallRecord]) -> None:
        # A lost result: abort what is still running (exec_server_control_message.abort, connect.md
        # §6) and end the turn with a clear error [G: Cursor's own limit and code are unknown].
        for r in round_recs:
            if r.outcome == "pending":
                r.outcome = "timeout"
                abort = agent_pb2.AgentServerMessage()
                abort.exec_server_control_message.abort.id = r.exec_id
                await self.send(abort)
        await self.fail(
            "deadline_exceeded",
            f"emulator: no mcp_result for tool call {rec.call_id} ({rec.name}, exec {rec.exec_id}) "
            f"within {self.b.tool_result_timeout_s:g} s",
            25,
            title="Tool call timed out",
            detail=f"The client did not return the result of tool {rec.name!r} in time.",
            is_retryable=False,
        )

    def _usage(self, prompt: str, reply: str, thinking: str) -> dict[str, int]:
        """Usage as the live service reports it: ``input_tokens`` already *includes* cache reads
        and writes (live-dialect.md row 13), so a client that adds them on top double counts.

        By default a quarter of the prompt is a cache write and half a cache read, so a faithful
        client sees non-zero cache figures on every turn. Scripted numbers (``Behaviour.usage``)
        win; a scripted ``input_tokens`` is never raised, and an unscripted one is at least the
        scripted cache figures."""
        u = self.b.usage
        prompt_tokens = estimate_tokens(prompt)
        out = {
            "input_tokens": prompt_tokens,
            "output_tokens": estimate_tokens(reply) + estimate_tokens(thinking),
            "cache_read_tokens": prompt_tokens // 2,
            "cache_write_tokens": prompt_tokens // 4,
            "reasoning_tokens": estimate_tokens(thinking),
        }
        if u is not None:
            for k in list(out):
                v = getattr(u, k)
                if v is not None:
                    out[k] = int(v)
            if u.input_tokens is None:
                out["input_tokens"] = max(
                    out["input_tokens"], out["cache_read_tokens"] + out["cache_write_tokens"]
                )
        return out

    async def _turn_ended(self, usage: dict[str, int]) -> None:
        self.rec.usage = dict(usage)
        msg = agent_pb2.AgentServerMessage()
        te = msg.interaction_update.turn_ended
        for k, v in usage.items():
            setattr(te, k, v)
        te.ended_at_ms = int(time.time() * 1000)
        cost = self.b.usage.cost_cents if self.b.usage and self.b.usage.cost_cents is not None else None
        if cost is None:
            cost = round(usage["input_tokens"] * 0.0003 + usage["output_tokens"] * 0.0015, 6)
        te.estimated_cost.raw_cost_cents = cost
        te.estimated_cost.charged_cents = cost
        te.estimated_cost.source = agent_pb2.ESTIMATED_COST_SOURCE_CATALOG
        await self.send(msg)

    async def _checkpoint(self, roots: Sequence[bytes], turns: Sequence[bytes], state_tokens: int) -> None:
        msg = agent_pb2.AgentServerMessage()
        cp = msg.conversation_checkpoint_update
        cp.root_prompt_messages_json.extend(roots)
        cp.turns.extend(turns)
        cp.token_details.used_tokens = state_tokens
        cp.token_details.max_tokens = self.b.max_tokens
        await self.send(msg)

    async def _malformed_frame(self) -> None:
        """Write the scheduled malformed frame (after the text so far) and end the response."""
        raw = self.io.raw
        if raw is None:
            raise RuntimeError(f"{self.fault} needs a wire that can write raw bytes")
        f = self.fault
        self.ended = True
        self.rec.outcome = f"malformed:{f.value}" if f else "malformed"
        if f is Fault.TRUNCATED_FRAME:
            msg = agent_pb2.AgentServerMessage()
            msg.interaction_update.text_delta.text = "never delivered"
            payload = msg.SerializeToString()
            # The prefix promises 64 bytes more than follow; then the body ends.
            await raw(b"\x00" + (len(payload) + 64).to_bytes(4, "big") + payload, True)
            return
        if f is Fault.GARBAGE_FRAME:
            # Field 1 (interaction_update), length-delimited, claims 100 bytes; 7 follow: protobuf
            # refuses it as truncated, whatever the framing says.
            await raw(encode_envelope(b"\x0a\x64garbage"), False)
        elif f is Fault.BAD_FLAG_FRAME:
            msg = agent_pb2.AgentServerMessage()
            msg.interaction_update.text_delta.text = "flagged"
            payload = msg.SerializeToString()
            # Built by hand: encode_envelope rightly refuses unknown flag bits.
            await raw(b"\x04" + len(payload).to_bytes(4, "big") + payload, False)
        elif f is Fault.BAD_END_STREAM:
            await raw(encode_envelope(b"<html>502 Bad Gateway</html>", flags=FLAG_END_STREAM), True)
            return
        await self.io.end(None, None)

    async def _fault_before_output(self, req: agent_pb2.AgentRunRequest) -> bool:
        f = self.fault
        model = req.requested_model.model_id or req.model_details.model_id
        if f is Fault.UNAUTHENTICATED:
            await self.fail(
                "unauthenticated",
                "Error",
                38,
                title="Unauthorized request.",
                detail="User is unauthorized",
                is_retryable=False,
            )
            return True
        if f is Fault.USAGE_LIMIT:
            await self.fail(
                "resource_exhausted",
                "Error",
                10,
                title="You've hit your usage limit",
                detail="Your usage limits will reset when your monthly cycle ends.",
                is_retryable=False,
            )
            return True
        if f is Fault.RATE_LIMIT:
            retry_after = self.fault_args.get("retry_after", 1)
            await self.fail(
                "resource_exhausted",
                "Error",
                50,
                title="Rate limited",
                detail="Too many requests, please slow down.",
                is_retryable=True,
                metadata={"retry-after": [str(retry_after)]},
            )
            return True
        if f is Fault.OUTDATED_CLIENT:
            await self.fail(
                "failed_precondition",
                "Error",
                30,
                title="Outdated client",
                detail="Your version of Cursor no longer supports this action.",
                is_retryable=False,
            )
            return True
        if f is Fault.UNAVAILABLE:
            await self.fail("unavailable", "emulated transient failure")
            return True
        rejection = self.model_rejection(req.requested_model) if self.model_rejection else None
        if f is None and rejection is not None:
            await self.io.end(*rejection)
            self.ended = True
            self.rec.outcome = f"error:{rejection[0].code}"
            return True
        if f is Fault.BAD_MODEL or (model and not self.known_models(model)):
            await self.fail(
                "invalid_argument",
                "Error",
                5,
                title="Invalid model",
                detail=f"The model {model!r} does not exist or you do not have access to it.",
                is_retryable=False,
            )
            return True
        return False


async def run_turn(
    io: TurnIO,
    behaviour: Behaviour,
    record: RunRecord,
    *,
    fault: tuple[Fault, Mapping[str, Any]] | None,
    pending_texts: dict[str, str],
    known_models: Callable[[str], bool],
    lost_checkpoints: set[str] | None = None,
    model_rejection: ModelRejection | None = None,
) -> None:
    """Run one turn over ``io``; always ends the stream unless the client is gone.
    ``lost_checkpoints``: conversation ids whose last run lost its final checkpoint (shared by the
    runs of one emulator); ``model_rejection``: how ``Run`` refuses a model it does not accept."""
    turn = _Turn(
        io,
        behaviour,
        record,
        fault,
        pending_texts,
        known_models,
        lost_checkpoints=lost_checkpoints,
        model_rejection=model_rejection,
    )
    first = await _first_message(io)
    if first is None:
        record.outcome = "disconnected"
        record.finished = True
        return
    while first.WhichOneof("message") == "client_heartbeat":
        # The SDK's heartbeat timer can fire before its run_request is written (seen on h2 Run):
        # count it and keep waiting for the run request.
        record.client_messages.append(first)
        record.client_heartbeats += 1
        nxt = await _first_message(io)
        if nxt is None:
            record.outcome = "disconnected"
            record.finished = True
            return
        first = nxt
    dispatcher = asyncio.create_task(turn.dispatch())
    try:
        await turn.run(first)
    except _Cancelled:
        record.outcome = "cancelled"
        if not turn.ended and not io.disconnected.is_set():
            # [G] Cursor's exact answer to cancel_action is undocumented: end the turn cleanly.
            msg = agent_pb2.AgentServerMessage()
            msg.interaction_update.turn_ended.SetInParent()
            await io.send(msg)
            await io.end(None, None)
    except _Gone:
        record.outcome = "disconnected"
    finally:
        dispatcher.cancel()
        record.finished = True


async def _first_message(io: TurnIO) -> agent_pb2.AgentClientMessage | None:
    get = asyncio.ensure_future(io.inbound.get())
    gone = asyncio.ensure_future(io.disconnected.wait())
    try:
        await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if get.done():
        return get.result()
    get.cancel()
    return None


def _to_tool_result(result: agent_pb2.McpResult, text: str, out: agent_pb2.McpToolResult) -> None:
    """``McpResult`` (the exec answer) → ``McpToolResult`` (what ``ToolCall.mcp_tool_call`` carries)."""
    case = result.WhichOneof("result")
    if case == "success":
        out.success.CopyFrom(result.success)
    elif case == "rejected":
        out.rejected.CopyFrom(result.rejected)
    elif case == "permission_denied":
        out.permission_denied.CopyFrom(result.permission_denied)
    elif case == "approved":
        out.success.SetInParent()
    else:
        out.error.error = text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_no: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(field_no << 3 | 2) + _varint(len(payload)) + payload
