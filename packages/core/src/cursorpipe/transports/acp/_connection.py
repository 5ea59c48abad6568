"""One ``agent acp`` process: handshake, request/answer matching, inbound requests, routing.

Stdout has one consumer, the read callback (``AcpConnection._on_stdout``, called by the event
loop with each read; a small task only reports the end of the stream). It resolves answers by
``id``, routes ``session/update`` notifications *strictly by* ``sessionId`` into the queue of the
turn that owns that session (so concurrent prompts never see each other's text), and answers the
agent's own requests at once: ``session/request_permission`` by the configured policy and
``cursor/*`` (and anything else) with ``-32601`` so no turn ever waits on us (acp.md §4, §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from ..._codecs.jsonrpc import (
    METHOD_NOT_FOUND,
    ErrorResponse,
    MessageDecoder,
    Notification,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
)
from ..._redact import redact
from ...errors import AgentCrashError, AuthenticationError, CursorPipeError, ProtocolError, SessionError
from .._process import ManagedProcess
from ._errors import crash_error

__all__ = ["AcpConnection", "PermissionPolicy", "RpcCallError", "TurnItem", "TurnQueue", "child_environment"]

log = logging.getLogger("cursorpipe.acp")

PermissionPolicy = Literal["reject", "allow_once", "allow_always"]

_POLICY_KINDS: Mapping[str, tuple[str, ...]] = {
    "reject": ("reject_once", "reject_always"),
    "allow_once": ("allow_once",),
    "allow_always": ("allow_always", "allow_once"),
}


class TurnItem(NamedTuple):
    """What a turn's queue receives: an update, the prompt's answer, or a failure.

    A named tuple rather than a frozen dataclass: one is built per streamed update, and a tuple
    is several times cheaper to construct (issue 16 profile)."""

    kind: Literal["update", "result", "error"]
    payload: Any = None


#: ``TurnItem("update", payload)`` without the named tuple's Python-level ``__new__`` (one per
#: streamed update, issue 16).
_new_item = tuple.__new__


class StallWatch:
    """One timer for the stall time of every waiting turn of a connection, armed for the
    earliest due wait and moved only when it fires (issue 16: a timer per wait, and then one per
    turn, armed and cancelled timers several times per request, each a heap push in the loop)."""

    __slots__ = ("_timer", "_waiting")

    def __init__(self) -> None:
        self._waiting: set[TurnQueue] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, queue: TurnQueue, due: float, loop: asyncio.AbstractEventLoop) -> None:
        """``queue`` waits and stalls at ``due`` (loop time) unless :meth:`stop` comes first."""
        self._waiting.add(queue)
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._check, loop)

    def stop(self, queue: TurnQueue) -> None:
        """``queue`` is no longer waiting."""
        self._waiting.discard(queue)

    def close(self) -> None:
        """Cancel the timer (the connection is gone)."""
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        earliest: float | None = None
        for queue in list(self._waiting):
            due = queue.due
            if due <= now:
                self._waiting.discard(queue)
                queue.stall()
            elif earliest is None or due < earliest:
                earliest = due
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._check, loop)


class TurnQueue:
    """One turn's items, in order, for a single consumer at a time.

    A deque and one waiter instead of ``asyncio.Queue``, whose bookkeeping (task counting,
    putter wake-ups for an unbounded queue) was a visible share of every streamed update (issue
    16). A cancelled :meth:`get` loses nothing: items stay queued until taken. The consumer may
    pop ``items`` directly (the turn loop does, to save two calls per item).

    :meth:`get` with ``stall_s`` raises ``TimeoutError`` once it has waited that long with nothing
    arriving; the timing is ``watch``'s, shared by the turns of one connection (a queue made
    without one has its own)."""

    __slots__ = ("_stalled", "_waiter", "_watch", "due", "items")

    def __init__(self, watch: StallWatch | None = None) -> None:
        self.items: deque[TurnItem] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._watch = watch if watch is not None else StallWatch()
        self.due = 0.0  # when the current wait stalls (loop time)
        self._stalled = False

    def qsize(self) -> int:
        """Items waiting."""
        return len(self.items)

    def put_nowait(self, item: TurnItem) -> None:
        """Add an item and wake the consumer."""
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> TurnItem:
        """The oldest item; raises ``asyncio.QueueEmpty`` when there is none."""
        if not self.items:
            raise asyncio.QueueEmpty
        return self.items.popleft()

    async def get(self, stall_s: float | None = None) -> TurnItem:
        """The oldest item, waiting for one if needed (``TimeoutError`` after ``stall_s`` of
        waiting, when given)."""
        while not self.items:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            if stall_s is not None:
                self.due = loop.time() + stall_s
                self._watch.start(self, self.due, loop)
            try:
                await waiter
            finally:
                self._waiter = None
                if stall_s is not None:
                    self._watch.stop(self)
            if self._stalled:
                self._stalled = False
                if not self.items:
                    raise TimeoutError
        return self.items.popleft()

    def stall(self) -> None:
        """Wake the waiting consumer with ``TimeoutError`` (its stall time has passed)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._stalled = True
            waiter.set_result(None)

    def disarm(self) -> None:
        """The turn is over: stop watching it."""
        self._watch.stop(self)


class RpcCallError(Exception):
    """An error answer, kept raw so the caller can classify it with its own context."""

    def __init__(self, method: str, error: RpcError) -> None:
        super().__init__(f"{method}: {error.code} {error.message}")
        self.method = method
        self.error = error


class AcpConnection:
    """A started ``agent acp`` child and its JSON-RPC session."""

    def __init__(self, proc: ManagedProcess, *, policy: PermissionPolicy, generation: int) -> None:
        self._proc = proc
        self._policy = policy
        self.generation = generation
        self._ids = itertools.count(1)
        self._pending: dict[int | str, tuple[str, asyncio.Future[Any] | TurnQueue]] = {}
        self._routes: dict[str, TurnQueue] = {}
        self._prompt_ids: dict[str, int] = {}  # session -> id of its pending session/prompt
        self._cancelled_sessions: set[str] = set()
        self._decoder = MessageDecoder()
        self._stall_watch = StallWatch()
        self._dead: CursorPipeError | None = None
        self._on_exit: list[Callable[[AcpConnection, CursorPipeError], None]] = []
        self.init_result: dict[str, Any] = {}
        self.noise_lines = 0
        self.permission_answers: deque[str] = deque(maxlen=64)  # recent answers, for diagnostics
        # Stdout is decoded and routed inside the loop's read callback (no reader task to wake per
        # read, issue 16); the task below only waits for the end of the stream to report it.
        self._eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_loop(), name=f"acp-reader-{proc.pid}")
        proc.set_stdout_sink(self._on_stdout)

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        policy: PermissionPolicy,
        generation: int,
        client_version: str,
    ) -> AcpConnection:
        """Spawn and ``initialize`` (acp.md §2). The caller bounds the time it may take."""
        proc = await ManagedProcess.spawn(argv, env=env, cwd=cwd, name="agent acp", direct_stdout=True)
        conn = cls(proc, policy=policy, generation=generation)
        try:
            conn.init_result = await conn.call(
                "initialize",
                {
                    "protocolVersion": 1,
                    # We never serve fs/terminal: Cursor then reads, writes and runs shells itself in
                    # cwd (acp.md §4), which is why the session mode is forced to ask/plan.
                    "clientCapabilities": {
                        "fs": {"readTextFile": False, "writeTextFile": False},
                        "terminal": False,
                    },
                    "clientInfo": {"name": "cursorpipe", "version": client_version},
                },
            )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def authenticate(self, timeout_s: float) -> None:
        """``authenticate`` with the first advertised method (acp.md §2); only for a stored login."""
        methods = self.init_result.get("authMethods") if isinstance(self.init_result, dict) else None
        method_id = "cursor_login"
        if isinstance(methods, list) and methods and isinstance(methods[0], dict):
            method_id = str(methods[0].get("id") or method_id)
        try:
            async with asyncio.timeout(timeout_s):
                await self.call("authenticate", {"methodId": method_id})
        except TimeoutError as exc:
            # acp.md §2: without a stored login `authenticate` starts a browser device flow. Whether
            # it fails at once or waits for a login that never comes (we set NO_OPEN_BROWSER=1 and
            # BROWSER=true, as the doc advises) is not certain [G]; a long wait means "not logged in".
            raise AuthenticationError(
                "Cursor's agent is waiting for a browser login (no stored login). Run `agent login` "
                "on this machine, or set CURSOR_API_KEY.",
                transport="acp",
            ) from exc
        except RpcCallError as exc:
            # acp.md §2: without a stored login the CLI tries a browser device flow and fails
            # -32602 headless; that is a credentials problem, not a broken transport.
            raise AuthenticationError(
                "Cursor's agent has no stored login. Run `agent login` on this machine, or set "
                f"CURSOR_API_KEY (agent said: {redact(exc.error.text)}).",
                transport="acp",
                details={"rpc_code": exc.error.code},
            ) from exc

    @property
    def pid(self) -> int:
        """Process id of the agent."""
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process is up and its stdout has not ended."""
        return self._dead is None and self._proc.returncode is None

    @property
    def death(self) -> CursorPipeError | None:
        """Why the connection ended, once it has."""
        return self._dead

    def on_exit(self, callback: Callable[[AcpConnection, CursorPipeError], None]) -> None:
        """Call ``callback`` once when the process dies unexpectedly."""
        self._on_exit.append(callback)

    async def close(self) -> None:
        """Staged shutdown of the process (idempotent); pending calls fail with ``AgentCrashError``."""
        if self._dead is None:
            self._dead = AgentCrashError("agent acp was shut down", transport="acp", retryable=True)
            self._on_exit.clear()
        self._stall_watch.close()
        await self._proc.close()
        # asyncio.wait (not wait_for) so our own cancellation is never mistaken for the reader's.
        await asyncio.wait({self._reader}, timeout=2.0)
        if not self._reader.done():
            self._reader.cancel()
        self._fail_all(self._dead)

    def kill(self) -> None:
        """Kill the process now (tests, emergency)."""
        self._proc.kill()

    # ---- calls ----------------------------------------------------------------------------------
    async def _send(self, data: bytes) -> None:
        if self._dead is not None:
            raise self._dead
        try:
            # One whole line per write keeps lines from interleaving without a lock; waiting for
            # the pipe only when its backlog is over the high-water mark.
            if self._proc.write_nowait(data):
                await self._proc.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            # The reader will see EOF and report the exit code; give it a moment to do so.
            await asyncio.wait({self._reader}, timeout=2.0)
            raise (
                self._dead
                or crash_error(self._proc.returncode, self._proc.stderr_tail(), during="while we wrote to it")
            ) from exc

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Send a request and wait for its answer. Error answers raise :class:`RpcCallError`; a
        dead process raises ``AgentCrashError``. No timeout here: callers bound the wait."""
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (method, fut)
        try:
            await self._send(encode_request(ident, method, params))
            return await fut
        finally:
            self._pending.pop(ident, None)

    async def start_prompt(self, session_id: str, params: dict[str, Any]) -> TurnQueue:
        """Route ``session_id``'s updates to a fresh queue, then send ``session/prompt``; its answer
        arrives on the same queue after every update that preceded it."""
        queue = TurnQueue(self._stall_watch)
        if session_id in self._routes:
            raise SessionError(
                f"The previous turn of session {session_id} is still finishing; try again shortly.",
                code="session_busy",
                retryable=True,
                transport="acp",
            )
        self._routes[session_id] = queue
        self._cancelled_sessions.discard(session_id)
        ident = next(self._ids)
        self._pending[ident] = ("session/prompt", queue)
        self._prompt_ids[session_id] = ident
        try:
            await self._send(encode_request(ident, "session/prompt", params))
        except BaseException:
            self._pending.pop(ident, None)
            self._routes.pop(session_id, None)
            self._prompt_ids.pop(session_id, None)
            raise
        return queue

    def end_prompt(self, session_id: str, queue: TurnQueue) -> None:
        """Stop routing ``session_id`` (the turn is over or abandoned)."""
        if self._routes.get(session_id) is queue:
            del self._routes[session_id]
            self._cancelled_sessions.discard(session_id)
        # The prompt's own id, not a scan of every pending call (O(concurrency) per turn).
        ident = self._prompt_ids.get(session_id)
        if ident is not None:
            entry = self._pending.get(ident)
            if entry is None or entry[1] is queue:
                self._pending.pop(ident, None)
                del self._prompt_ids[session_id]

    async def cancel(self, session_id: str) -> None:
        """``session/cancel`` is a notification (acp.md §4); later permission requests of the
        session are answered ``cancelled`` as the spec asks."""
        self._cancelled_sessions.add(session_id)
        if self._dead is None:
            with contextlib.suppress(CursorPipeError):
                await self._send(encode_notification("session/cancel", {"sessionId": session_id}))

    # ---- reader -------------------------------------------------------------------------------
    def _on_stdout(self, data: bytes) -> None:
        """Stdout bytes from the event loop's read callback (``b""`` at end of file)."""
        if self._eof.done():
            return
        try:
            items = self._decoder.feed(data) if data else self._decoder.close()
            routes = self._routes
            for item in items:
                # Streamed updates are nearly every line: routed here, without the dispatcher's
                # type ladder or a call per line (issue 16); _notification has the same rules.
                if type(item) is Notification and item.method == "session/update":
                    params = item.params
                    sid = params.get("sessionId")
                    update = params.get("update")
                    queue = routes.get(sid) if isinstance(sid, str) else None
                    if queue is not None and type(update) is dict:
                        queue.put_nowait(_new_item(TurnItem, ("update", update)))
                else:
                    self._dispatch(item)
        except Exception as exc:  # a bug in dispatch must not leave callers waiting forever
            log.exception("acp: reader failed")
            self._die(ProtocolError(f"agent acp reader failed: {exc}", transport="acp"))
            self._eof.set_result(None)
            return
        if not data:
            self._eof.set_result(None)

    async def _read_loop(self) -> None:
        await self._eof
        if self._dead is not None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._proc.wait(), 5.0)
        await asyncio.sleep(0.05)  # let the stderr drain catch the last lines
        self._die(
            crash_error(self._proc.returncode, self._proc.stderr_tail(), during="while serving requests")
        )

    def _die(self, error: CursorPipeError) -> None:
        if self._dead is not None:
            return
        self._dead = error
        # Whatever is left of the child is unusable (stdout gone or unreadable): make sure it ends.
        self._proc.kill()
        log.warning("acp: %s", error)
        self._fail_all(error)
        for callback in self._on_exit:
            try:
                callback(self, error)
            except Exception:
                log.exception("acp: exit callback failed")

    def _fail_all(self, error: CursorPipeError) -> None:
        for _method, target in list(self._pending.values()):
            if isinstance(target, TurnQueue):
                target.put_nowait(TurnItem("error", error))
            elif not target.done():
                target.set_exception(error)
        self._pending.clear()
        for queue in list(self._routes.values()):
            queue.put_nowait(TurnItem("error", error))
        self._routes.clear()

    def _dispatch(self, item: object) -> None:
        if type(item) is Notification:  # not session/update (routed by _on_stdout)
            self._notification(item)
        elif isinstance(item, ProtocolError):
            # acp.md §2: Cursor may print noise; a bad line costs only itself.
            self.noise_lines += 1
            log.debug("acp: ignored a line: %s", redact(str(item)))
        elif isinstance(item, (Response, ErrorResponse)):
            self._answer(item)
        elif isinstance(item, Request):
            self._request(item)

    def _answer(self, msg: Response | ErrorResponse) -> None:
        entry = self._pending.pop(msg.id, None) if msg.id is not None else None
        if entry is None:
            log.debug("acp: answer to unknown id %r", msg.id)
            return
        method, target = entry
        if isinstance(target, TurnQueue):
            if isinstance(msg, Response):
                target.put_nowait(TurnItem("result", msg.result))
            else:
                target.put_nowait(TurnItem("error", RpcCallError(method, msg.error)))
        elif not target.done():
            if isinstance(msg, Response):
                target.set_result(msg.result)
            else:
                target.set_exception(RpcCallError(method, msg.error))

    def _notification(self, msg: Notification) -> None:
        # session/update is routed by _on_stdout itself (the hot path); other notifications
        # are none of a turn's business.
        log.debug("acp: notification %s ignored", msg.method)

    def _request(self, msg: Request) -> None:
        if msg.method == "session/request_permission":
            reply = encode_result(msg.id, self._permission(msg.params))
        else:
            # acp.md §4: cursor/* extensions (create_plan, ask_question, update_todos, task...) and
            # fs/*/terminal/* (we advertised none): answering -32601 lets the turn continue.
            log.debug("acp: answering %s with -32601", msg.method)
            reply = encode_error(msg.id, METHOD_NOT_FOUND, "Method not found", {"method": msg.method})
        task = asyncio.get_running_loop().create_task(self._reply(reply))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _reply(self, data: bytes) -> None:
        with contextlib.suppress(CursorPipeError):
            await self._send(data)

    def _permission(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = params.get("sessionId")
        if isinstance(sid, str) and sid in self._cancelled_sessions:
            self.permission_answers.append("cancelled")
            return {"outcome": {"outcome": "cancelled"}}
        options = [o for o in params.get("options") or () if isinstance(o, dict)]
        # acp.md §4: choose by kind and echo the agent's own (hyphenated) optionId.
        for kind in _POLICY_KINDS[self._policy]:
            for option in options:
                if option.get("kind") == kind and isinstance(option.get("optionId"), str):
                    self.permission_answers.append(option["optionId"])
                    return {"outcome": {"outcome": "selected", "optionId": option["optionId"]}}
        self.permission_answers.append("cancelled")
        return {"outcome": {"outcome": "cancelled"}}


def child_environment(base: Mapping[str, str], *, api_key: str, auth_token: str) -> dict[str, str]:
    """The agent's environment: ours plus credentials (never on argv) and the switches that keep the
    CLI from opening a browser (acp.md §2)."""
    # cursorpipe's own settings (bearer token, keys) are none of the agent's business.
    env = {k: v for k, v in base.items() if not k.upper().startswith("CURSORPIPE_")}
    for name in ("CURSOR_API_KEY", "CURSOR_AUTH_TOKEN"):
        env.pop(name, None)
    if api_key:
        env["CURSOR_API_KEY"] = api_key
    if auth_token:
        env["CURSOR_AUTH_TOKEN"] = auth_token
    env["NO_OPEN_BROWSER"] = "1"
    env["BROWSER"] = "true"
    return env
