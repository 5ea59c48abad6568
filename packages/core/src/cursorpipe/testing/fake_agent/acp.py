"""``agent acp`` of the fake Cursor CLI: JSON-RPC 2.0 over stdio, one object per line.

It reproduces what acp.md documents about Cursor's ACP server, quirks included, so the acp
transport can be tested offline. Deliberately written with plain ``json`` (not cursorpipe's own
codec) so a codec bug cannot hide behind a matching fake.

Behaviour (acp.md section in brackets):

* ``initialize`` returns Cursor's captured result with the ``cursor_login`` auth method, answers
  any ``protocolVersion`` with 1 and may be called again (§2).
* Without ``CURSOR_API_KEY``/``CURSOR_AUTH_TOKEN``/``--api-key`` and with account state
  ``logged_out``, ``session/new`` fails ``-32000 Authentication required`` (§3.1), and
  ``authenticate`` fails ``-32602`` "Failed to open browser for login…" (§2). With a stored login
  (any other account state) ``authenticate`` returns ``{}`` and is optional.
* ``session/new`` needs ``cwd`` and ``mcpServers`` (else ``-32603`` with a Zod-like issue array),
  returns ``sessionId``/``modes``/``models``/``configOptions`` with bracketed ACP model ids (bare
  ids when ``clientCapabilities._meta.parameterizedModelPicker`` was set) and then sends
  ``available_commands_update`` (§3.1, §3.2). A wrong ``FAKE_AGENT_EXPECT_API_KEY`` and the first
  ``FAKE_AGENT_SESSION_FAILURES`` calls fail ``-32603`` "Failed to initialize session services".
* ``session/set_config_option``, ``session/set_model`` (``-32602 Invalid model value`` for ids that
  are not ACP ids, e.g. CLI ids), ``session/set_mode`` (``current_mode_update``; bad id ``-32603``
  with ``data.details``) (§3.2).
* ``session/prompt`` streams ``session_info_update`` (first turn), ``agent_thought_chunk`` (thinking
  models), ``agent_message_chunk`` word by word, then answers ``{"stopReason": "end_turn"}`` (§4).
  Markers inside the prompt text ask for more: :data:`TOOL_MARKER` (a ``tool_call`` +
  ``tool_call_update`` with a newline in ``toolCallId``), :data:`PERMISSION_MARKER` (a shell tool
  call gated by ``session/request_permission`` with the three options; the answer is honoured and
  spelled into the text by :func:`permission_note`; the tool update says ``completed`` either way,
  as Cursor does), :data:`PLAN_MARKER` (a ``cursor/create_plan`` request the turn waits on, then a
  ``plan`` update) and :data:`HANG_MARKER` (never finishes until ``session/cancel``).
* ``session/load`` restores a session from memory or from the fake's on-disk store (sessions are
  saved after every completed turn, as Cursor keeps ``~/.cursor/acp-sessions``), replays its
  history as ``user_message_chunk``/``agent_message_chunk`` updates and answers without
  ``sessionId``; unknown ids get ``-32602`` (§3.1).
* ``session/cancel`` is a notification; the running prompt answers ``{"stopReason":"cancelled"}``.
  Sent as a request it gets ``-32601`` (§4).
* Account ``usage_limit``/``rate_limited``, an unroutable model and ``FAKE_AGENT_INBAND_ERROR`` put
  the error *into the text stream* and still end with ``end_turn`` (§4, §9; the ACP shape of quota
  errors was never captured, §5, so this follows the in-band pattern [G]).
* ``FAKE_AGENT_NETWORK_ERROR=1`` answers prompts ``-32603`` with the CLI's network text [G].
* Malformed lines get no answer at all and nothing on stderr (§2, §5).
* Prompts on different sessions run concurrently and their notifications interleave.

Knobs: every ``FAKE_AGENT_*`` variable of :class:`~cursorpipe.testing.fake_agent.catalog.Knobs`
(latency, first delay, crash after N chunks with an exit code, hang after N chunks, account state,
in-band error, expected API key, record file) plus the ACP-only ones:

==================================  ===========================================================
``FAKE_AGENT_SESSION_FAILURES``     the first N ``session/new`` calls fail transiently
``FAKE_AGENT_HANG_INITIALIZE``      ``1``: never answer ``initialize`` (start-up timeouts)
``FAKE_AGENT_AUTH_WAITS``           ``1``: logged out, ``authenticate`` waits forever (browser flow)
``FAKE_AGENT_STDOUT_NOISE``         ``1``: a non-JSON warning line on stdout before serving
==================================  ===========================================================

With ``FAKE_AGENT_RECORD`` set, every line the fake receives is appended to that file as
``{"mode": "acp", "pid": …, "in": <message>}`` (malformed lines as ``"malformed"``), and each
start as ``{"mode": "acp", "start": true, "argv": […], "has_api_key": …}`` (never the key itself),
so tests can assert on exactly what a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import (
    ACP_DEFAULT_MODEL_ID,
    AUTH_REQUIRED_ACP_MESSAGE,
    INBAND_ERRORS,
    INVALID_API_KEY_TEXT,
    MODELS,
    NETWORK_ERROR_TEXT,
    RATE_LIMIT_TEXT,
    AccountState,
    FakeModel,
    Knobs,
    expected_reply,
    expected_thinking,
    find_model,
    reply_chunks,
    usage_limit_text,
)

__all__ = [
    "ENV_AUTH_WAITS",
    "ENV_HANG_INITIALIZE",
    "ENV_SESSION_FAILURES",
    "ENV_STDOUT_NOISE",
    "HANG_MARKER",
    "PERMISSION_MARKER",
    "PLAN_MARKER",
    "TOOL_MARKER",
    "permission_note",
    "run",
]

#: The first N ``session/new`` calls of a process fail with "Failed to initialize session services"
#: (acp.md §3.1: seen transiently with valid credentials).
ENV_SESSION_FAILURES = "FAKE_AGENT_SESSION_FAILURES"
#: When set to 1, ``authenticate`` without a stored login waits for a browser login that never
#: comes instead of failing at once (acp.md §2 documents both a failure and a timeout) [G].
ENV_AUTH_WAITS = "FAKE_AGENT_AUTH_WAITS"
#: When set to 1, ``initialize`` is never answered (start-up timeout tests).
ENV_HANG_INITIALIZE = "FAKE_AGENT_HANG_INITIALIZE"

#: When set to 1, a non-JSON warning line goes to stdout before serving. Where Cursor prints its
#: "⚠ Warning: The provided API key is inv…" (acp.md §5) is not captured; a client must survive
#: it either way [G].
ENV_STDOUT_NOISE = "FAKE_AGENT_STDOUT_NOISE"

#: Prompt markers (anywhere in the prompt text).
TOOL_MARKER = "[fake:tool]"
PERMISSION_MARKER = "[fake:permission]"
PLAN_MARKER = "[fake:plan]"
HANG_MARKER = "[fake:hang]"

_PERMISSION_OPTIONS = [
    {"optionId": "allow-once", "name": "Allow once", "kind": "allow_once"},
    {"optionId": "allow-always", "name": "Allow always", "kind": "allow_always"},
    {"optionId": "reject-once", "name": "Reject", "kind": "reject_once"},
]

_MODES = [
    {"id": "agent", "name": "Agent", "description": "Full access: edits files and runs commands"},
    {"id": "plan", "name": "Plan", "description": "Read-only: plans before acting"},
    {"id": "ask", "name": "Ask", "description": "Read-only: answers questions"},
]


def permission_note(option_id: str | None) -> str:
    """The text the fake streams before its reply after a permission request; ``option_id`` is the
    chosen option (``"allow-once"``, ``"reject-once"``...) or ``None`` when the client answered
    ``cancelled``."""
    if option_id is None:
        return "[shell `echo hello`: cancelled] "
    if option_id.startswith("allow"):
        return f"[shell `echo hello`: {option_id}, output: hello] "
    return f"[shell `echo hello`: {option_id}] "


class _Cancelled(Exception):
    pass


@dataclass
class _Session:
    id: str
    model: FakeModel
    mode: str = "agent"
    history: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    running: asyncio.Task[None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)


def _flag(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


class _Agent:
    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.knobs = Knobs.from_env(env)
        flag_key = _flag(argv, "--api-key") or ""
        self.api_key = env.get("CURSOR_API_KEY", "") or flag_key
        self.auth_token = env.get("CURSOR_AUTH_TOKEN", "") or _flag(argv, "--auth-token") or ""
        # acp.md §2: a key/token present at process start marks the process authenticated; a stored
        # login (every account state except logged_out) also lets session/new through.
        self.authenticated = bool(self.api_key or self.auth_token) or (
            self.knobs.account != AccountState.LOGGED_OUT
        )
        start = _flag(argv, "--model", "-m")
        found = find_model(start) if start else None
        self.start_model = found or find_model(ACP_DEFAULT_MODEL_ID) or MODELS[0]
        self.session_failures = max(0, int(env.get(ENV_SESSION_FAILURES, "0") or 0))
        self.hang_initialize = env.get(ENV_HANG_INITIALIZE, "") == "1"
        self.stdout_noise = env.get(ENV_STDOUT_NOISE, "") == "1"
        self.auth_waits = env.get(ENV_AUTH_WAITS, "") == "1"
        self.parameterized = False
        self.sessions: dict[str, _Session] = {}
        # acp.md §3.1: Cursor keeps ACP sessions on disk (~/.cursor/acp-sessions/<id>/), so a new
        # process can session/load them. The fake keeps one JSON file per session next to the
        # print mode's chat store.
        if self.knobs.state_dir:
            root = self.knobs.state_dir
        elif env.get("CURSOR_DATA_DIR"):
            root = os.path.join(env["CURSOR_DATA_DIR"], "fake-agent-chats")
        else:
            root = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cursor", "fake-agent-chats")
        self.store = os.path.join(root, "acp-sessions")
        self.next_id = 0  # acp.md §4: Cursor numbers its own requests from 0
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._record = None
        if self.knobs.record:
            self._record = open(self.knobs.record, "a", encoding="utf-8")  # noqa: SIM115
        self._log({"start": True, "argv": argv, "has_api_key": bool(self.api_key)})

    # ---- output -------------------------------------------------------------------------------
    def _log(self, entry: dict[str, Any]) -> None:
        if self._record is not None:
            entry = {"mode": "acp", "pid": os.getpid(), **entry}
            self._record.write(json.dumps(entry) + "\n")
            self._record.flush()

    def send(self, obj: dict[str, Any]) -> None:
        # One write per line from a single thread: lines of concurrent prompts interleave but
        # never mix.
        sys.stdout.buffer.write(json.dumps({"jsonrpc": "2.0", **obj}).encode() + b"\n")
        sys.stdout.buffer.flush()

    def result(self, ident: Any, result: Any) -> None:
        self.send({"id": ident, "result": result})

    def error(self, ident: Any, code: int, message: str, data: Any = None) -> None:
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        self.send({"id": ident, "error": err})

    def update(self, session_id: str, update: dict[str, Any]) -> None:
        self.send({"method": "session/update", "params": {"sessionId": session_id, "update": update}})

    def _next_request_id(self) -> int:
        ident = self.next_id
        self.next_id += 1
        return ident

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        ident = self._next_request_id()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = fut
        self.send({"id": ident, "method": method, "params": params})
        try:
            return await fut
        finally:
            self.pending.pop(ident, None)

    # ---- input --------------------------------------------------------------------------------
    def handle_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            # acp.md §2/§5: malformed lines are silently dropped, stderr stays quiet.
            self._log({"malformed": line[:200].decode("utf-8", "replace")})
            return
        self._log({"in": msg})
        method = msg.get("method")
        if isinstance(method, str):
            raw = msg.get("params")
            params: dict[str, Any] = raw if isinstance(raw, dict) else {}
            if "id" in msg:
                self.dispatch(msg["id"], method, params)
            elif method == "session/cancel":
                self.cancel(params)
            return
        ident = msg.get("id")
        fut = self.pending.get(ident) if isinstance(ident, int) else None
        if fut is not None and not fut.done():
            if "error" in msg:
                fut.set_result({"_error": msg["error"]})
            else:
                fut.set_result(msg.get("result"))

    def dispatch(self, ident: Any, method: str, params: dict[str, Any]) -> None:
        handler = {
            "initialize": self.initialize,
            "authenticate": self.authenticate,
            "session/new": self.new_session,
            "session/load": self.load_session,
            "session/set_config_option": self.set_config_option,
            "session/set_model": self.set_model,
            "session/set_mode": self.set_mode,
            "session/prompt": self.prompt,
        }.get(method)
        if handler is None:
            # acp.md §3.1/§4: unimplemented methods (fork, resume, cancel-as-request) → -32601.
            self.error(ident, -32601, "Method not found", {"method": method})
            return
        handler(ident, params)

    # ---- handshake ----------------------------------------------------------------------------
    def initialize(self, ident: Any, params: dict[str, Any]) -> None:
        if self.hang_initialize:
            return
        caps = params.get("clientCapabilities")
        meta = caps.get("_meta") if isinstance(caps, dict) else None
        self.parameterized = bool(isinstance(meta, dict) and meta.get("parameterizedModelPicker"))
        self.result(
            ident,
            {
                "protocolVersion": 1,
                "agentCapabilities": {
                    "loadSession": True,
                    "mcpCapabilities": {"http": True, "sse": True},
                    "promptCapabilities": {"audio": False, "embeddedContext": False, "image": True},
                    "sessionCapabilities": {"list": {}},
                },
                "authMethods": [
                    {
                        "id": "cursor_login",
                        "name": "Cursor Login",
                        "description": "Authenticate using existing Cursor login credentials. "
                        "Run 'agent login' first if not logged in.",
                    }
                ],
            },
        )

    def authenticate(self, ident: Any, params: dict[str, Any]) -> None:
        method = params.get("methodId")
        if method != "cursor_login":
            self.error(
                ident,
                -32602,
                "Invalid params",
                {"message": f"Unknown authentication method: {method}. Supported method: cursor_login"},
            )
            return
        if self.knobs.account == AccountState.LOGGED_OUT and self.auth_waits:
            return  # the device flow waits for a login in a browser nobody opens
        if self.knobs.account == AccountState.LOGGED_OUT:
            # acp.md §2: no stored login → the browser device flow; headless it fails like this.
            self.error(
                ident,
                -32602,
                "Invalid params",
                {
                    "message": "Failed to open browser for login. Please visit: "
                    "https://cursor.com/loginDeepControl?challenge=fake&mode=login"
                },
            )
            return
        self.authenticated = True
        self.result(ident, {})

    # ---- sessions -----------------------------------------------------------------------------
    def _model_id(self, model: FakeModel) -> str:
        return model.acp_bare_id if self.parameterized else model.acp_id

    def _config_options(self, session: _Session) -> list[dict[str, Any]]:
        return [
            {
                "id": "mode",
                "name": "Mode",
                "category": "mode",
                "type": "select",
                "currentValue": session.mode,
                "options": [{"value": m["id"], "name": m["name"]} for m in _MODES],
            },
            {
                "id": "model",
                "name": "Model",
                "category": "model",
                "type": "select",
                "currentValue": self._model_id(session.model),
                "options": [{"value": self._model_id(m), "name": m.label} for m in MODELS],
            },
        ]

    def _session(self, ident: Any, params: dict[str, Any]) -> _Session | None:
        sid = params.get("sessionId")
        session = self.sessions.get(sid) if isinstance(sid, str) else None
        if session is None:
            # acp.md §3.1 documents this text for session/load; other methods are assumed alike [G].
            self.error(ident, -32602, "Invalid params", {"message": f'Session "{sid}" not found'})
        return session

    def new_session(self, ident: Any, params: dict[str, Any]) -> None:
        if not self.authenticated:
            self.error(ident, -32000, "Authentication required", {"message": AUTH_REQUIRED_ACP_MESSAGE})
            return
        issues = [
            {"code": "invalid_type", "expected": exp, "received": "undefined", "path": [name],
             "message": "Required"}
            for name, exp in (("cwd", "string"), ("mcpServers", "array"))
            if name not in params
        ]  # fmt: skip
        if issues:
            # acp.md §3.1: both are required; Cursor answers -32603 with a raw Zod issue array.
            self.error(ident, -32603, "Internal error", issues)
            return
        key_ok = (
            not self.knobs.expect_api_key or not self.api_key or self.api_key == self.knobs.expect_api_key
        )
        if self.session_failures > 0 or not key_ok:
            self.session_failures = max(0, self.session_failures - 1)
            self.error(ident, -32603, "Internal error", {"message": "Failed to initialize session services"})
            return
        session = _Session(id=str(uuid.uuid4()), model=self.start_model)
        self.sessions[session.id] = session
        self.result(
            ident,
            {
                "sessionId": session.id,
                "modes": {"currentModeId": session.mode, "availableModes": _MODES},
                "models": {
                    "currentModelId": self._model_id(session.model),
                    "availableModels": [{"modelId": self._model_id(m), "name": m.label} for m in MODELS],
                },
                "configOptions": self._config_options(session),
            },
        )
        # acp.md §3.1: the account's slash commands follow the result.
        self.update(
            session.id,
            {
                "sessionUpdate": "available_commands_update",
                "availableCommands": [{"name": "summarize", "description": "Summarize the chat"}],
            },
        )

    def _save(self, session: _Session) -> None:
        try:
            os.makedirs(self.store, exist_ok=True)
            path = os.path.join(self.store, f"{session.id}.json")
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(
                    {
                        "model": session.model.cli_id,
                        "mode": session.mode,
                        "history": session.history,
                        "replies": session.replies,
                    },
                    fh,
                )
            os.replace(path + ".tmp", path)
        except OSError as exc:
            sys.stderr.write(f"fake agent: could not store session {session.id}: {exc}\n")

    def _stored(self, sid: str) -> _Session | None:
        if not sid or os.sep in sid or sid.startswith("."):
            return None
        try:
            with open(os.path.join(self.store, f"{sid}.json"), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        model = find_model(str(data.get("model", ""))) or self.start_model
        return _Session(
            id=sid,
            model=model,
            mode=str(data.get("mode", "agent")),
            history=list(data.get("history", [])),
            replies=list(data.get("replies", [])),
        )

    def load_session(self, ident: Any, params: dict[str, Any]) -> None:
        if not self.authenticated:
            self.error(ident, -32000, "Authentication required", {"message": AUTH_REQUIRED_ACP_MESSAGE})
            return
        sid = params.get("sessionId")
        session = self.sessions.get(sid) if isinstance(sid, str) else None
        if session is None and isinstance(sid, str):
            session = self._stored(sid)
        if session is None:
            # acp.md §3.1: unknown id → -32602 'Session "…" not found'.
            self.error(ident, -32602, "Invalid params", {"message": f'Session "{sid}" not found'})
            return
        self.sessions[session.id] = session
        # acp.md §3.1: the history is replayed as updates before the result, whose shape is that of
        # session/new without sessionId.
        for user, reply in zip(session.history, session.replies, strict=False):
            self._chunk(session, "user_message_chunk", user)
            self._chunk(session, "agent_message_chunk", reply)
        self.result(
            ident,
            {
                "modes": {"currentModeId": session.mode, "availableModes": _MODES},
                "models": {
                    "currentModelId": self._model_id(session.model),
                    "availableModels": [{"modelId": self._model_id(m), "name": m.label} for m in MODELS],
                },
                "configOptions": self._config_options(session),
            },
        )

    def _set_model(self, ident: Any, session: _Session, value: Any) -> bool:
        model = next((m for m in MODELS if self._model_id(m) == value), None)
        if model is None:
            # acp.md §3.2: CLI ids (or anything else) sent as ACP ids → -32602.
            self.error(ident, -32602, "Invalid params", {"message": f"Invalid model value: {value}"})
            return False
        session.model = model
        return True

    def _set_mode(self, ident: Any, session: _Session, value: Any) -> bool:
        if value not in {m["id"] for m in _MODES}:
            self.error(
                ident,
                -32603,
                "Internal error",
                {"details": f"Invalid mode ID: {value}. Valid modes: agent, plan, ask"},
            )
            return False
        session.mode = str(value)
        self.update(session.id, {"sessionUpdate": "current_mode_update", "currentModeId": session.mode})
        return True

    def set_config_option(self, ident: Any, params: dict[str, Any]) -> None:
        session = self._session(ident, params)
        if session is None:
            return
        config_id, value = params.get("configId"), params.get("value")
        if config_id == "model":
            ok = self._set_model(ident, session, value)
        elif config_id == "mode":
            ok = self._set_mode(ident, session, value)
        else:
            self.error(ident, -32602, "Invalid params", {"message": f"Unknown config option: {config_id}"})
            return
        if ok:
            self.result(ident, {"configOptions": self._config_options(session)})

    def set_model(self, ident: Any, params: dict[str, Any]) -> None:
        session = self._session(ident, params)
        if session is not None and self._set_model(ident, session, params.get("modelId")):
            self.result(ident, {})

    def set_mode(self, ident: Any, params: dict[str, Any]) -> None:
        session = self._session(ident, params)
        if session is not None and self._set_mode(ident, session, params.get("modeId")):
            self.result(ident, {})

    # ---- prompt turn --------------------------------------------------------------------------
    def prompt(self, ident: Any, params: dict[str, Any]) -> None:
        session = self._session(ident, params)
        if session is None:
            return
        if session.running is not None and not session.running.done():
            # Cursor's behaviour for overlapping prompts on one session is undocumented [G].
            self.error(ident, -32603, "Internal error", {"message": "A prompt is already running"})
            return
        if self.knobs.network_error:
            # The ACP shape of a network failure is not captured (acp.md §5); the fake answers the
            # prompt with an internal error carrying the CLI's network text [G].
            self.error(ident, -32603, "Internal error", {"message": NETWORK_ERROR_TEXT})
            return
        blocks = params.get("prompt")
        text = "".join(
            str(b.get("text", "")) for b in blocks or [] if isinstance(b, dict) and b.get("type") == "text"
        )
        session.cancel = asyncio.Event()
        task = asyncio.create_task(self._turn(ident, session, text))
        session.running = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel(self, params: dict[str, Any]) -> None:
        sid = params.get("sessionId")
        session = self.sessions.get(sid) if isinstance(sid, str) else None
        if session is not None:
            session.cancel.set()

    async def _pause(self, session: _Session, delay: float) -> None:
        """Sleep ``delay`` (at least yield, so concurrent turns interleave); raise on cancel."""
        if session.cancel.is_set():
            raise _Cancelled
        if delay <= 0:
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.cancel.wait(), delay)
        if session.cancel.is_set():
            raise _Cancelled

    async def _await_or_cancel(self, session: _Session, coro: Any) -> Any:
        waiter = asyncio.ensure_future(coro)
        cancel = asyncio.ensure_future(session.cancel.wait())
        try:
            await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
        if waiter.done():
            return waiter.result()
        waiter.cancel()
        raise _Cancelled

    def _chunk(self, session: _Session, kind: str, text: str) -> None:
        self.update(session.id, {"sessionUpdate": kind, "content": {"type": "text", "text": text}})

    async def _turn(self, ident: Any, session: _Session, text: str) -> None:
        knobs = self.knobs
        sid = session.id
        try:
            await self._pause(session, knobs.first_delay_s)
            if not session.history:
                # acp.md §4: auto-title shortly into the first turn.
                self.update(sid, {"sessionUpdate": "session_info_update", "title": text[:40] or "Chat"})
            prefix = ""
            if session.model.thinking:
                for piece in reply_chunks(expected_thinking(text)):
                    self._chunk(session, "agent_thought_chunk", piece)
                    await self._pause(session, knobs.latency_s)
            if TOOL_MARKER in text:
                await self._tool(session)
            if PERMISSION_MARKER in text:
                prefix += await self._permission(session)
            if PLAN_MARKER in text:
                await self._plan(session)
            if HANG_MARKER in text:
                await session.cancel.wait()
                raise _Cancelled
            reply = prefix + self._reply(session, text)
            session_reply = reply
            for count, piece in enumerate(reply_chunks(reply), start=1):
                self._chunk(session, "agent_message_chunk", piece)
                if knobs.crash_after is not None and count >= knobs.crash_after:
                    self._crash()
                if knobs.hang_after is not None and count >= knobs.hang_after:
                    await session.cancel.wait()
                    raise _Cancelled
                await self._pause(session, knobs.latency_s)
        except _Cancelled:
            # acp.md §4: the pending prompt resolves with stopReason cancelled; session stays usable.
            self.result(ident, {"stopReason": "cancelled"})
            return
        session.history.append(text)
        session.replies.append(session_reply)
        self._save(session)
        # acp.md §4: no usage in the result, ever (PROBE §10.10).
        self.result(ident, {"stopReason": "end_turn"})

    def _reply(self, session: _Session, text: str) -> str:
        knobs = self.knobs
        if knobs.account == AccountState.USAGE_LIMIT:
            return usage_limit_text()
        if knobs.account == AccountState.RATE_LIMITED:
            return RATE_LIMIT_TEXT
        if not session.model.routable:
            # acp.md §3.2: set_config_option accepted the model; the prompt fails in-band.
            return INBAND_ERRORS["model_not_found"].replace("{model}", session.model.cli_id)
        reply = expected_reply(text, session.history)
        extra = knobs.inband_error_text(session.model.cli_id)
        return f"{reply}\n\n{extra}" if extra else reply

    def _crash(self) -> None:
        # Like the print mode's crash dump, it quotes the key so callers' redaction is tested.
        sys.stderr.write(
            f"fake agent: simulated crash in the middle of a stream (CURSOR_API_KEY={self.api_key})\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(self.knobs.crash_code)

    async def _tool(self, session: _Session) -> None:
        # acp.md §4: Cursor's toolCallId contains a literal newline.
        call_id = f"call-{uuid.uuid4()}-0\nfc_{uuid.uuid4().hex[:12]}_0"
        self.update(
            session.id,
            {
                "sessionUpdate": "tool_call",
                "toolCallId": call_id,
                "title": "Read README.md",
                "kind": "search",
                "status": "pending",
                "rawInput": {"path": "README.md"},
            },
        )
        await self._pause(session, self.knobs.latency_s)
        self.update(
            session.id,
            {
                "sessionUpdate": "tool_call_update",
                "toolCallId": call_id,
                "status": "completed",
                "rawOutput": {"content": "# README"},
            },
        )

    async def _permission(self, session: _Session) -> str:
        call_id = f"call-{uuid.uuid4()}-0\nfc_{uuid.uuid4().hex[:12]}_0"
        tool = {
            "toolCallId": call_id,
            "title": "`echo hello`",
            "kind": "execute",
            "status": "pending",
            "content": [{"type": "content", "content": {"type": "text", "text": "Not in allowlist: echo"}}],
        }
        self.update(session.id, {"sessionUpdate": "tool_call", **tool})
        answer = await self._await_or_cancel(
            session,
            self.request(
                "session/request_permission",
                {"sessionId": session.id, "toolCall": tool, "options": _PERMISSION_OPTIONS},
            ),
        )
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        chosen = outcome.get("optionId") if isinstance(outcome, dict) else None
        if isinstance(outcome, dict) and outcome.get("outcome") == "cancelled":
            chosen = None
        allowed = isinstance(chosen, str) and chosen.startswith("allow")
        # acp.md §4: rejected or failed tools still report status "completed" (never "failed").
        self.update(
            session.id,
            {
                "sessionUpdate": "tool_call_update",
                "toolCallId": call_id,
                "status": "completed",
                "rawOutput": {"exitCode": 0, "stdout": "hello\n", "stderr": ""} if allowed else {},
            },
        )
        return permission_note(chosen if isinstance(chosen, str) else None)

    async def _plan(self, session: _Session) -> None:
        todos = [{"id": "1", "content": "Answer the question", "status": "pending"}]
        # acp.md §4: cursor/* requests carry no "_" prefix. Whether Cursor blocks the turn until the
        # client answers is not captured; the fake waits, which is the hang clients guard against [G].
        await self._await_or_cancel(
            session,
            self.request(
                "cursor/create_plan",
                {
                    "toolCallId": f"plan-{uuid.uuid4()}",
                    "name": "Plan",
                    "overview": "A short plan",
                    "plan": "# Plan\n\n1. Answer the question",
                    "todos": todos,
                    "isProject": False,
                    "phases": [],
                },
            ),
        )
        # A second extension request nobody waits for (acp.md §4 lists cursor/update_todos).
        self.send(
            {
                "id": self._next_request_id(),
                "method": "cursor/update_todos",
                "params": {"merge": True, "todos": todos},
            }
        )
        self.update(
            session.id,
            {
                "sessionUpdate": "plan",
                "entries": [{"content": "Answer the question", "priority": "medium", "status": "pending"}],
            },
        )

    # ---- main loop ----------------------------------------------------------------------------
    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        if self.stdout_noise:
            sys.stdout.buffer.write(INVALID_API_KEY_TEXT.encode() + b"\n")
            sys.stdout.buffer.flush()
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip():
                self.handle_line(line)
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        return 0


def run(argv: list[str]) -> int:
    """Serve ACP on stdin/stdout until stdin closes. ``argv`` is the fake agent's command line
    (global flags such as ``--api-key``/``--model`` may precede ``acp``)."""
    agent = _Agent(list(argv), os.environ)
    try:
        return asyncio.run(agent.serve())
    except KeyboardInterrupt:
        return 130
