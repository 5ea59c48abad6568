"""One agent turn as Cursor's backend runs it, independent of the HTTP transport carrying it.

Order (connect.md §5-§7, official-sdk-as-peer.md §3): after the ``run_request`` the server stores the
system-prompt blob in the client's KV store (``set_blob``, awaited), fetches the earlier turns named by
the client-held checkpoint (``get_blob``, connect.md §5.5), asks for the request context with an exec
(awaited: result + ``stream_close``), optionally sends an interaction query (must be answered), then
streams thinking, then (when the run offers tools and the behaviour calls some) rounds of tool calls
through the MCP exec channel, then text deltas with token deltas, stores the new turn as a blob, sends
the checkpoint, ``turn_ended`` with usage, and the end-stream frame. A ``cancel_action`` ends the turn.

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

from ..._proto.agent.v1 import agent_pb2
from ...transports.connect._codec import ConnectError, ConnectErrorDetail, encode_error_details
from ._behaviour import (
    Behaviour,
    Fault,
    ReplyContext,
    estimate_tokens,
    expected_reply,
)
from ._tools import (
    ToolCallRecord,
    ToolCallScript,
    ToolContext,
    ToolResult,
    default_tool_arguments,
    default_tool_calls,
    expected_tools_reply,
    history_user,
    mcp_result_text,
    pending_history_results,
    tool_definitions,
    tool_name_of,
    tool_schema,
    value_of,
)

__all__ = ["RunRecord", "TurnIO", "run_turn"]

SendFn = Callable[[agent_pb2.AgentServerMessage], Awaitable[None]]
EndFn = Callable[[ConnectError | None, Mapping[str, Sequence[str]] | None], Awaitable[None]]


@dataclass(eq=False)
class TurnIO:
    """The transport half a turn talks through: ``send`` one server message, ``end`` the stream
    (with an optional Connect error), and ``inbound``, the client's messages in order (``None`` when
    the client closed its side or disconnected)."""

    send: SendFn
    end: EndFn
    inbound: asyncio.Queue[agent_pb2.AgentClientMessage | None]
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


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
    #: names of the tools the run request offered (``mcp_tools``), in order
    tools_offered: list[str] = field(default_factory=list)
    #: every tool call the model made, with the client's answer
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    #: the tool results the answer was based on (stateless history first, then this run's)
    tool_results: list[ToolResult] = field(default_factory=list)


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


def _user_text(msg: agent_pb2.ConversationHistoryMessage) -> tuple[str, str] | None:
    case = msg.WhichOneof("message")
    if case == "user":
        parts = [c.text.text for c in msg.user.content if c.WhichOneof("content") == "text"]
        return ("user", "".join(parts))
    if case == "assistant":
        parts = [c.text.text for c in msg.assistant.content if c.WhichOneof("content") == "text"]
        return ("assistant", "".join(parts))
    if case == "tool":
        parts = [c.text.text for c in msg.tool.content if c.WhichOneof("content") == "text"]
        return ("tool", "".join(parts))
    return None


class _Turn:
    def __init__(
        self,
        io: TurnIO,
        behaviour: Behaviour,
        record: RunRecord,
        fault: tuple[Fault, Mapping[str, Any]] | None,
        pending_texts: dict[str, str],
        known_models: Callable[[str], bool],
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

    async def query(self, kind: str) -> agent_pb2.InteractionResponse:
        qid, self.next_query = self.next_query, self.next_query + 1
        fut: asyncio.Future[agent_pb2.InteractionResponse] = asyncio.get_running_loop().create_future()
        self.queries[qid] = fut
        msg = agent_pb2.AgentServerMessage()
        q = msg.interaction_query
        q.id = qid
        field_name = {
            "web_search": "web_search_request_query",
            "web_fetch": "web_fetch_request_query",
            "ask_question": "ask_question_interaction_query",
            "switch_mode": "switch_mode_request_query",
        }.get(kind)
        if field_name is None:
            raise ValueError(f"unknown interaction query kind {kind!r}")
        getattr(q, field_name).SetInParent()
        await self.send(msg)
        resp: agent_pb2.InteractionResponse = await self.wait_answer(fut)
        return resp

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
        system_prompt = req.custom_system_prompt if req.HasField("custom_system_prompt") else ""
        self.rec.system_prompt = system_prompt

        # 1. System-prompt blob into the client's store (official-sdk-as-peer.md §3 step 2, CT capture).
        system_doc = json.dumps({"role": "system", "content": self.b.system_prompt_blob}).encode()
        system_blob = await self.kv_set(system_doc)

        # 2. Earlier turns live in the client's blob store; fetch them (connect.md §5.5).
        history: list[tuple[str, str]] = []
        for bid in state.turns:
            data = await self.kv_get(bid)
            if data is None:
                await self.fail(
                    "data_loss", f"emulator: turn blob {bid.hex()[:16]}… missing from the client store"
                )
                return
            try:
                turn_doc = json.loads(data)
                history += [("user", str(turn_doc["user"])), ("assistant", str(turn_doc["assistant"]))]
            except (ValueError, KeyError, TypeError):
                await self.fail("data_loss", "emulator: a turn blob from the client store is corrupt")
                return
        checkpoint_turns = len(state.turns)
        if action.user_message_action.HasField("conversation_history"):
            for m in action.user_message_action.conversation_history.messages:
                item = _user_text(m)
                if item is not None:
                    history.append(item)
        self.rec.history = tuple(history)

        if self.b.blob_round_trip:
            probe = f"emulator probe blob for run {req.run_id}".encode()
            pid = await self.kv_set(probe)
            back = await self.kv_get(pid)
            missing = await self.kv_get(blob_id(b"never stored " + uuid.uuid4().bytes))
            self.rec.blob_round_trip_ok = back == probe and missing is None

        # 3. Request context exec (connect.md §6.1), then optional extra exec and query.
        if self.b.request_context:
            await self.exec(lambda m: m.request_context_args.SetInParent())
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
        if self.b.interaction_query:
            await self.query(self.b.interaction_query)

        # 4. The model's output: thinking, tool calls (issue 7), the answer.
        offered = tool_definitions(req)
        self.rec.tools_offered = [tool_name_of(d) for d in req.mcp_tools.mcp_tools]
        trailing = action.user_message_action.trailing_conversation_history.messages
        for m in trailing:
            item = _user_text(m)
            if item is not None:
                history.append(item)
        self.rec.history = tuple(history)
        # A stateless tool exchange (OpenAI style): the model's tool calls and their results come
        # after the user's message, in trailing_conversation_history [G: the name suggests it], or
        # at the end of conversation_history with an empty user text. Either way the model answers
        # from those results instead of calling again.
        sequence = list(action.user_message_action.conversation_history.messages)
        if text.strip():
            sequence.append(history_user(text))
        sequence += list(trailing)
        pending, prior_rounds = pending_history_results(sequence)
        ctx = ReplyContext(
            text=text,
            turn=checkpoint_turns + 1,
            history=tuple(history),
            system_prompt=system_prompt,
            model=req.requested_model.model_id or req.model_details.model_id,
            run_request=req,
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
        if offered and not await self._tool_phase(ctx, offered, results, prior_rounds, bool(pending)):
            return
        ctx = dataclasses.replace(ctx, tool_results=tuple(results))
        if self.b.reply is None:
            if results:
                reply = expected_tools_reply(results)
            else:
                reply = expected_reply(
                    text, checkpoint_turns + 1, ctx.earlier_user_messages, system_prompt=bool(system_prompt)
                )
        elif callable(self.b.reply):
            reply = self.b.reply(ctx)
        else:
            reply = self.b.reply
        self.rec.reply = reply
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
                await self._checkpoint(system_blob, list(state.turns), state_tokens=0)
                await self.io.end(None, None)  # clean end-stream without turn_ended
                self.ended = True
                self.rec.outcome = "dropped"
                return
        await self.update(
            step_completed={
                "step_id": self.step,
                "step_duration_ms": int((time.monotonic() - started) * 1000),
            }
        )

        # 5. Store the turn in the client's store, checkpoint, usage, end.
        turn_blob = await self.kv_set(json.dumps({"user": text, "assistant": reply}).encode())
        prompt_chars = self.b.system_prompt_blob + system_prompt + "".join(t for _, t in history) + text
        prompt_chars += "".join(d.name + d.description + d.input_schema_json for d in req.mcp_tools.mcp_tools)
        prompt_chars += "".join(r.text for r in results)
        calls_text = "".join(c.name + json.dumps(c.arguments) for c in self.rec.tool_calls)
        usage = self._usage(prompt_chars, reply + calls_text, thinking)
        await self._checkpoint(
            system_blob, [*state.turns, turn_blob], usage["input_tokens"] + usage["output_tokens"]
        )
        await self._turn_ended(usage)
        self.pending_texts.pop(req.run_id, None)
        await self.io.end(None, None)
        self.ended = True
        self.rec.outcome = "completed"

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

    async def _checkpoint(self, system_blob: bytes, turns: list[bytes], state_tokens: int) -> None:
        msg = agent_pb2.AgentServerMessage()
        cp = msg.conversation_checkpoint_update
        cp.root_prompt_messages_json.append(system_blob)
        cp.turns.extend(turns)
        cp.token_details.used_tokens = state_tokens
        cp.token_details.max_tokens = self.b.max_tokens
        await self.send(msg)

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
    model_rejection: ModelRejection | None = None,
) -> None:
    """Run one turn over ``io``; always ends the stream unless the client is gone."""
    turn = _Turn(io, behaviour, record, fault, pending_texts, known_models, model_rejection)
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
