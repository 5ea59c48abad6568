"""``AcpTransport``: Cursor's models through one persistent ``agent acp`` process.

Fixes what the original cursorpipe got wrong (acp.md §1.5): the session mode is set to
``config.default_mode`` (Cursor's default is ``agent``, with full tools); permission requests are
answered by ``config.acp_permission_policy`` (reject by default) instead of always ``allow-once``;
``cursor/*`` requests are answered so turns never hang; a timed-out or abandoned turn sends
``session/cancel``; the API key travels in the environment, never on argv; models are switched per
request with ids from the session's own options (acp.md §3.2); a crashed agent is restarted up to
``config.acp_max_restarts`` times with backoff; ACP errors, including the ones Cursor writes into
the answer text, are classified.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from ..._codecs.jsonrpc import METHOD_NOT_FOUND
from ..._constants import (
    ACP_AUTHENTICATE_TIMEOUT_S,
    ACP_CANCEL_GRACE_S,
    ACP_RESTART_BACKOFF_BASE_S,
    ACP_RESTART_BACKOFF_MAX_S,
    ACP_SESSION_NEW_ATTEMPTS,
    ACP_SESSION_NEW_RETRY_DELAY_S,
)
from ..._redact import register_secret
from ...config import CursorPipeConfig
from ...errors import (
    AgentCrashError,
    AgentStartupError,
    CursorPipeError,
    ProtocolError,
    SessionError,
    StreamStalledError,
)
from ...types import (
    ChatMessage,
    Event,
    ImagePart,
    ModelInfo,
    StopReason,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)
from .._process import CLI_STALL_TIMEOUT_S
from .._prompt_text import ACP_FORMAT, prompt_text
from ..base import TransportCapabilities, TransportSession
from ._connection import AcpConnection, RpcCallError, TurnItem, TurnQueue, child_environment
from ._dispenser import SessionDispenser, SessionHandle
from ._errors import InbandErrorFilter, classify_rpc_error
from ._models import ModelCatalog

__all__ = ["AcpSession", "AcpTransport", "flatten_messages"]

log = logging.getLogger("cursorpipe.acp")

NAME = "acp"

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "stop",
    "cancelled": "cancelled",
    "max_tokens": "length",
    "max_turn_requests": "stop",
    "refusal": "content_filter",
}


def flatten_messages(messages: Sequence[ChatMessage]) -> str:
    """One prompt text for a stateless multi-message request (``ACP_FORMAT`` of
    :mod:`cursorpipe.transports._prompt_text`): ACP has no way to inject earlier turns or a system
    prompt into a new session (acp.md §3.1). A lone user message is sent verbatim."""
    return prompt_text(messages, ACP_FORMAT)


def _merge_waiting(queue: TurnQueue, kind: str, chunk: str) -> tuple[str, TurnItem | None]:
    """``chunk`` joined with the chunks of the same kind already waiting in ``queue``, and the
    first item of another kind taken on the way (to handle next). One delta instead of several:
    the text is the same, nothing waits longer, and every layer above handles one event (issue 16:
    per-event cost dominated at 32 concurrent)."""
    parts = [chunk]
    items = queue.items
    while items:
        nxt = items.popleft()
        if nxt.kind != "update":
            return "".join(parts), nxt
        next_kind, next_chunk = _chunk(nxt.payload)
        if next_kind == kind:
            parts.append(next_chunk)
        elif next_kind is not None:
            return "".join(parts), nxt
    return (parts[0] if len(parts) == 1 else "".join(parts)), None


def _blocks(text: str, images: Sequence[ImagePart]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in images:
        # acp.md §4: Cursor accepts image blocks (promptCapabilities.image) but not embedded
        # resources; a remote image goes as a resource link.
        if image.data is not None:
            blocks.append(
                {
                    "type": "image",
                    "mimeType": image.mime_type,
                    "data": base64.b64encode(image.data).decode("ascii"),
                }
            )
        elif image.url:
            blocks.append({"type": "resource_link", "uri": image.url, "name": "image"})
    return blocks


class AcpSession:
    """A dedicated ACP session (``open_session``): Cursor keeps its history."""

    def __init__(self, handle: SessionHandle, model: str) -> None:
        self.handle = handle
        self._model = model
        self.lock = asyncio.Lock()
        self.closed = False

    @property
    def id(self) -> str:
        """Cursor's ``sessionId``."""
        return self.handle.id

    @property
    def model(self) -> str:
        """The model the session was opened for."""
        return self._model


class AcpTransport:
    """The ``acp`` transport (see the module docstring).

    One ``agent acp`` child serves every request. Stateless requests each get a fresh session from
    the pool (``start(pool_size)`` pre-creates them) with the conversation flattened into the
    prompt; ``open_session`` gives a dedicated session whose history the agent keeps. When the
    child dies, in-flight turns fail with ``AgentCrashError`` (exit code and redacted stderr
    attached) and a new child is started in the background after a backoff; after
    ``config.acp_max_restarts`` consecutive crashes without a completed turn in between the
    transport gives up with ``AgentCrashError(code="agent_restarts_exhausted")``.
    """

    name = NAME
    #: After giving up on a crashing agent, wait this long before trying to start it again.
    restart_cooldown_s: float = 30.0
    #: Silence (no update at all) after which a turn fails with StreamStalledError. Generous: ACP
    #: has no heartbeat and whether a thinking model always streams thought chunks is not
    #: established (acp.md §4 lists them, observed on Auto only), unlike connect's 30 s.
    stall_timeout_s: float = CLI_STALL_TIMEOUT_S

    def __init__(self, config: CursorPipeConfig | None = None) -> None:
        self._config = config if config is not None else CursorPipeConfig()
        self._conn: AcpConnection | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self._closed = False
        self._restarts = 0
        self._total_restarts = 0
        self._gave_up: AgentCrashError | None = None
        self._gave_up_at = 0.0
        self._catalog: ModelCatalog | None = None
        self._preferred_model: str | None = None  # what new sessions are switched to ahead of time
        self._dispenser = SessionDispenser(self._new_session, prepare=self._preset_model)
        self._tmp_cwd: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        register_secret(self._config.api_key.get_secret_value())
        register_secret(self._config.auth_token.get_secret_value())

    # ---- introspection --------------------------------------------------------------------------
    @property
    def capabilities(self) -> TransportCapabilities:
        """Sessions are Cursor's; usage is estimated (ACP reports none, acp.md §4)."""
        return TransportCapabilities(
            sessions=True,
            native_tools=False,
            thinking=True,
            real_usage=False,
            images=True,
            system_prompt=True,
        )

    @property
    def pid(self) -> int | None:
        """Process id of the running agent, if any."""
        conn = self._conn
        return conn.pid if conn is not None and conn.alive else None

    @property
    def restarts(self) -> int:
        """How many times the agent was restarted after a crash."""
        return self._total_restarts

    @property
    def health_problem(self) -> str | None:
        """Why the transport cannot serve right now (it gave up restarting a crashing agent and
        is cooling down), or ``None``; the server reports it on ``/health``."""
        if self._gave_up is not None and time.monotonic() - self._gave_up_at < self.restart_cooldown_s:
            return self._gave_up.message
        return None

    @property
    def pool_ready(self) -> int:
        """Fresh sessions waiting in the pool."""
        return self._dispenser.ready

    # ---- process ----------------------------------------------------------------------------------
    def _cwd(self) -> str:
        if self._config.workspace:
            return self._config.workspace
        if self._tmp_cwd is None:
            # acp.md §4: the agent reads and writes files in cwd; keep it away from the user's files.
            self._tmp_cwd = tempfile.mkdtemp(prefix="cursorpipe-acp-")
        return self._tmp_cwd

    async def _connection(self) -> AcpConnection:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        if self._closed:
            raise SessionError("The acp transport is closed.", code="client_closed", transport=NAME)
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.alive:
                return conn
            if self._gave_up is not None:
                if time.monotonic() - self._gave_up_at < self.restart_cooldown_s:
                    raise self._gave_up
                # The budget recovers over time (issue 12 item 7): after the cool-down one more
                # start is tried; another crash before a completed turn gives up again.
                log.warning("acp: retrying agent acp after a %.0f s cool-down", self.restart_cooldown_s)
                self._gave_up = None
                self._restarts = max(0, self._config.acp_max_restarts - 1)
            if conn is not None:
                await conn.close()  # reap the dead child and its pipes before starting another
                self._restarts += 1
                if self._restarts > self._config.acp_max_restarts:
                    self._gave_up = AgentCrashError(
                        f"agent acp crashed {self._restarts} times in a row; gave up after "
                        f"{self._config.acp_max_restarts} restarts (CURSORPIPE_ACP_MAX_RESTARTS). "
                        f"Last failure: {conn.death}",
                        code="agent_restarts_exhausted",
                        retryable=False,
                        exit_code=getattr(conn.death, "exit_code", None),
                        stderr=getattr(conn.death, "stderr", ""),
                        transport=NAME,
                    )
                    self._gave_up_at = time.monotonic()
                    raise self._gave_up
                delay = min(ACP_RESTART_BACKOFF_MAX_S, ACP_RESTART_BACKOFF_BASE_S * 2 ** (self._restarts - 1))
                log.warning("acp: restarting agent acp (restart %d) in %.2f s", self._restarts, delay)
                await asyncio.sleep(delay)
                self._dispenser.clear()
                self._total_restarts += 1
            self._conn = await self._spawn()
            return self._conn

    async def _spawn(self) -> AcpConnection:
        api_key = self._config.api_key.get_secret_value()
        token = self._config.auth_token.get_secret_value()
        env = child_environment(os.environ, api_key=api_key, auth_token=token)
        self._generation += 1
        timeout = self._config.acp_startup_timeout_s
        try:
            async with asyncio.timeout(timeout):
                conn = await AcpConnection.open(
                    # Global flags go before `acp` (acp.md §2); credentials never go on argv.
                    [self._config.agent_bin, "acp"],
                    env=env,
                    cwd=self._cwd(),
                    policy=self._config.acp_permission_policy,
                    generation=self._generation,
                    client_version=_version(),
                )
        except TimeoutError as exc:
            raise AgentStartupError(
                f"agent acp did not finish its handshake within {timeout:g} s "
                "(CURSORPIPE_ACP_STARTUP_TIMEOUT_S). Check that `agent` runs and is logged in.",
                transport=NAME,
            ) from exc
        except RpcCallError as exc:
            raise ProtocolError(
                f"agent acp refused initialize (JSON-RPC {exc.error.code}: {exc.error.text}).",
                transport=NAME,
            ) from exc
        if not (api_key or token):
            # acp.md §2: a key or token already authenticates the process (and `authenticate` would
            # re-check only the stored login, possibly opening a browser), so only a stored login
            # is checked. It has its own deadline: a wait here means "not logged in", not "slow".
            try:
                await conn.authenticate(min(ACP_AUTHENTICATE_TIMEOUT_S, timeout))
            except BaseException:
                await conn.close()
                raise
        conn.on_exit(self._on_exit)
        log.info("acp: agent acp started (pid %d)", conn.pid)
        return conn

    def _on_exit(self, conn: AcpConnection, error: CursorPipeError) -> None:
        if self._closed or conn is not self._conn:
            return
        # Restart right away (with backoff) so the next request finds a ready process.
        self._background(self._restart_now())

    async def _restart_now(self) -> None:
        try:
            await self._connection()
        except CursorPipeError as exc:
            log.warning("acp: restart failed: %s", exc)
            return
        if self._dispenser.target:
            self._dispenser.kick()

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- sessions ---------------------------------------------------------------------------------
    async def _new_session(self) -> SessionHandle:
        """``session/new`` on the current process, mode set, transient failures retried."""
        last: CursorPipeError | None = None
        for attempt in range(ACP_SESSION_NEW_ATTEMPTS):
            conn = await self._connection()
            try:
                async with asyncio.timeout(self._config.acp_startup_timeout_s):
                    result = await conn.call("session/new", {"cwd": self._cwd(), "mcpServers": []})
                    handle = self._handle(conn, result)
                    await self._set_mode(handle)
                return handle
            except TimeoutError as exc:
                last = SessionError(
                    f"agent acp did not create a session within {self._config.acp_startup_timeout_s:g} s.",
                    code="session_timeout",
                    retryable=True,
                    transport=NAME,
                )
                last.__cause__ = exc
            except RpcCallError as exc:
                last = classify_rpc_error(exc.method, exc.error)
                if not (last.retryable and isinstance(last, SessionError)):
                    raise last from exc
            log.warning("acp: session/new failed (attempt %d): %s", attempt + 1, last)
            await asyncio.sleep(ACP_SESSION_NEW_RETRY_DELAY_S * (attempt + 1))
        assert last is not None
        raise last

    def _handle(self, conn: AcpConnection, result: Any) -> SessionHandle:
        if (
            not isinstance(result, dict)
            or not isinstance(result.get("sessionId"), str)
            or not result["sessionId"]
        ):
            raise ProtocolError("agent acp answered session/new without a sessionId.", transport=NAME)
        # Cached across sessions and refreshed whenever a session lists other options (issue 16:
        # rebuilding the id mapping for every pooled session was a measurable share of a request).
        catalog, current = self._session_catalog(result)
        modes = result.get("modes")
        mode = modes.get("currentModeId") if isinstance(modes, dict) else None
        return SessionHandle(
            id=result["sessionId"],
            conn=conn,
            catalog=catalog,
            model_value=current,
            mode=mode if isinstance(mode, str) else None,
        )

    def _session_catalog(self, result: dict[str, Any]) -> tuple[ModelCatalog, str | None]:
        """The catalogue of a session result (the cached one while the options are the same)
        and the session's current model."""
        catalog = self._catalog
        if catalog is not None:
            same, current = catalog.lists_same(result)
            if same:
                return catalog, current
        fresh, current = ModelCatalog.read(result)
        if catalog is None or catalog.options != fresh.options:
            if fresh.models:
                self._catalog = fresh
                return fresh, current
            return (fresh if catalog is None else catalog), current
        if fresh.raw is not None:
            catalog.raw = fresh.raw  # the same options listed differently: compare with this list
        return catalog, current

    async def _reload(self, lost: SessionHandle) -> SessionHandle:
        """Re-open a dedicated session on a restarted agent with ``session/load`` (acp.md §3.1:
        Cursor stores sessions on disk and replays them; older builds refused cross-process loads,
        so failure is expected and reported as a lost session)."""
        conn = await self._connection()
        try:
            async with asyncio.timeout(self._config.acp_startup_timeout_s):
                result = await conn.call(
                    "session/load", {"sessionId": lost.id, "cwd": self._cwd(), "mcpServers": []}
                )
        except (RpcCallError, TimeoutError) as exc:
            raise SessionError(
                f"Session {lost.id} was lost when agent acp stopped and could not be reloaded; "
                "open a new session.",
                code="session_lost",
                transport=NAME,
            ) from exc
        # The replayed history arrived as updates for a session nobody routes yet: dropped.
        reloaded = self._handle(
            conn, {**result, "sessionId": lost.id} if isinstance(result, dict) else result
        )
        reloaded.used = True
        await self._set_mode(reloaded)
        log.info("acp: session %s reloaded after a restart", lost.id)
        return reloaded

    async def _set_mode(self, handle: SessionHandle) -> None:
        """Cursor starts sessions in ``agent`` mode (acp.md §1.5, §3.1); switch to ask/plan."""
        wanted = self._config.default_mode
        if handle.mode == wanted:
            return
        try:
            # acp.md §3.2 / §10: the stable way is the "mode" config option.
            await handle.conn.call(
                "session/set_config_option", {"sessionId": handle.id, "configId": "mode", "value": wanted}
            )
        except RpcCallError as exc:
            log.debug("acp: set_config_option(mode) failed (%s); trying session/set_mode", exc)
            try:
                await handle.conn.call("session/set_mode", {"sessionId": handle.id, "modeId": wanted})
            except RpcCallError as exc2:
                raise SessionError(
                    f"agent acp refused to switch the session to {wanted!r} mode ({exc2.error.text}); "
                    "refusing to run a turn in agent mode.",
                    transport=NAME,
                ) from exc2
        handle.mode = wanted

    async def _preset_model(self, handle: SessionHandle) -> None:
        """Switch a new session to the model the last request asked for, so a pooled session is
        ready in the right mode *and* model and a request's path is one prompt (issue 16). A
        failure here is not the caller's: the request switches (and reports) again itself."""
        model = self._preferred_model
        if model is None:
            return
        try:
            await self._set_model(handle, model)
        except CursorPipeError as exc:
            log.debug("acp: could not pre-set model %r on a new session: %s", model, exc)

    async def _set_model(self, handle: SessionHandle, model: str) -> str:
        """Switch the session to ``model`` (a CLI id or an ACP id); return the CLI-style id."""
        target = handle.catalog.resolve(model)
        if handle.model_value != target.acp_id:
            try:
                try:
                    await handle.conn.call(
                        "session/set_config_option",
                        {"sessionId": handle.id, "configId": "model", "value": target.acp_id},
                    )
                except RpcCallError as exc:
                    if exc.error.code != METHOD_NOT_FOUND:
                        raise
                    # acp.md §3.2: older builds only have the legacy (unstable) method.
                    await handle.conn.call(
                        "session/set_model", {"sessionId": handle.id, "modelId": target.acp_id}
                    )
            except RpcCallError as exc:
                raise classify_rpc_error(
                    exc.method, exc.error, model=model, available=[m.cli_id for m in handle.catalog.models]
                ) from exc
            handle.model_value = target.acp_id
        return target.cli_id

    # ---- Transport protocol -----------------------------------------------------------------------
    async def start(self, *, pool_size: int = 0) -> None:
        """Start the process and pre-create ``pool_size`` sessions (waits for them)."""
        await self._connection()
        if pool_size > self._dispenser.target:
            self._dispenser.set_target(pool_size)
        try:
            async with asyncio.timeout(self._config.acp_startup_timeout_s * 2):
                await self._dispenser.fill()
        except TimeoutError:
            # The pool keeps filling in the background; requests create sessions on demand.
            log.warning("acp: the session pool was not full within the start-up timeout")

    async def open_session(self, model: str) -> TransportSession:
        """A dedicated session whose history Cursor keeps."""
        if self._catalog is not None:
            self._catalog.resolve(model)  # fail fast, before a pooled session is spent
        handle = await self._dispenser.take()
        await self._set_model(handle, model)
        return AcpSession(handle, model)

    async def close_session(self, session: TransportSession) -> None:
        """Forget the session. Cursor's ACP has no documented way to delete one (its store keeps
        ``~/.cursor/acp-sessions/<id>``, acp.md §1.5, §3.1), so nothing is sent."""
        if isinstance(session, AcpSession):
            session.closed = True

    async def list_models(self) -> list[ModelInfo]:
        """The model options of a fresh session, under the CLI ids users know (ACP ids as aliases)."""
        if self._catalog is None:
            handle = await self._new_session()
            self._dispenser.give_back_unused(handle)
        assert self._catalog is not None
        return self._catalog.infos()

    async def aclose(self) -> None:
        """Stop the process (staged shutdown) and background work. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._dispenser.aclose()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        if self._tmp_cwd is not None:
            shutil.rmtree(self._tmp_cwd, ignore_errors=True)
            self._tmp_cwd = None

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run one turn (see :mod:`cursorpipe.transports.base`)."""
        return self._run(request, session)

    async def _run(
        self, request: TurnRequest, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        # One generator from the session to TurnEnd: every async generator an event passes
        # through costs a step per event and a registration per turn (issue 16).
        lock: asyncio.Lock | None = None
        if session is None:
            handle = await self._take_fresh(request)
        else:
            handle, lock = await self._enter_session(session)
        try:
            conn = handle.conn
            text = flatten_messages(request.messages)
            model_id = await self._set_model(handle, request.model)
            self._preferred_model = request.model
            yield TransportInfo(transport=NAME, model=model_id, session_id=handle.id)
            images = [i for m in request.messages if m.role == "user" for i in m.images]
            queue = await conn.start_prompt(
                handle.id, {"sessionId": handle.id, "prompt": _blocks(text, images)}
            )
            available = handle.catalog.cli_ids
            inband = InbandErrorFilter()
            answer: list[str] = []
            answered = False  # the agent ended the prompt (result or error): nothing left to cancel
            held: TurnItem | None = None  # an item read while merging chunks, handled next
            items = queue.items
            stall_s = self.stall_timeout_s
            try:
                while True:
                    # Most items are already queued when we look (the reader delivers a whole
                    # read at once): taken straight from the deque.
                    if held is not None:
                        item, held = held, None
                    elif items:
                        item = items.popleft()
                    else:
                        try:
                            item = await queue.get(stall_s)
                        except TimeoutError:
                            raise self._stalled() from None
                    if item.kind != "update":
                        answered = True
                        break
                    kind, chunk = _chunk(item.payload)
                    if kind is None:
                        continue
                    merged, held = _merge_waiting(queue, kind, chunk)
                    if kind == "thought":
                        yield ThinkingDelta(merged)
                        continue
                    out = inband.feed(merged)
                    if out:
                        answer.append(out)
                        yield TextDelta(out)
            finally:
                queue.disarm()
                if answered:
                    conn.end_prompt(handle.id, queue)
                else:
                    await self._abandon(handle, queue)
            for event in self._turn_end(item, inband, request, available, text, answer):
                yield event
        finally:
            if lock is not None:
                lock.release()

    async def _take_fresh(self, request: TurnRequest) -> SessionHandle:
        """A fresh session for a stateless request, never reused (no cross-request history)."""
        if self._catalog is not None:
            self._catalog.resolve(request.model)
            # Before take(): the refill it starts pre-switches the next pooled session.
            self._preferred_model = request.model
        return await self._dispenser.take()

    async def _enter_session(self, session: TransportSession) -> tuple[SessionHandle, asyncio.Lock]:
        """A dedicated session's handle, its lock held (released by the caller after the turn)."""
        if not isinstance(session, AcpSession):
            raise SessionError("This session does not belong to the acp transport.", transport=NAME)
        if session.closed:
            raise SessionError(f"Session {session.id} was discarded; open a new one.", transport=NAME)
        await session.lock.acquire()
        try:
            handle = session.handle
            if handle.settling is not None:
                # The previous turn was abandoned; let the agent confirm its cancel first.
                await asyncio.wait({handle.settling}, timeout=ACP_CANCEL_GRACE_S + 1.0)
            if not handle.conn.alive:
                handle = session.handle = await self._reload(handle)
        except BaseException:
            session.lock.release()
            raise
        # The agent keeps the history: the request carries only the new messages.
        return handle, session.lock

    def _turn_end(
        self,
        item: TurnItem,
        inband: InbandErrorFilter,
        request: TurnRequest,
        available: list[str],
        text: str,
        answer: list[str],
    ) -> list[Event]:
        """The events after the prompt's answer ``item`` (or the error it carries)."""
        if item.kind == "error":
            raise self._turn_error(item, request.model, available)
        tail, error = inband.finish(model=request.model, available=available)
        if error is not None:
            raise error
        events: list[Event] = []
        if tail:
            answer.append(tail)
            events.append(TextDelta(tail))
        stop = item.payload.get("stopReason") if isinstance(item.payload, dict) else None
        # ACP reports no token usage at all (acp.md §4): estimate it.
        usage = Usage(
            input_tokens=estimate_tokens(text), output_tokens=estimate_tokens("".join(answer)), estimated=True
        )
        self._restarts = 0  # a completed turn proves the process healthy
        events.append(UsageEvent(usage))
        events.append(TurnEnd(_STOP_REASONS.get(str(stop), "stop"), usage))
        return events

    def _stalled(self) -> StreamStalledError:
        """The error of a turn whose queue stayed empty for ``stall_timeout_s`` (the wait is inline
        in the turn loop: one coroutine less per wait, issue 16)."""
        return StreamStalledError(
            f"agent acp sent nothing for {self.stall_timeout_s:g} s; the turn was cancelled (a "
            "live but silent agent would hold the request until its deadline).",
            transport=NAME,
        )

    def _turn_error(self, item: TurnItem, model: str, available: list[str]) -> CursorPipeError:
        payload = item.payload
        if isinstance(payload, RpcCallError):
            error = classify_rpc_error(payload.method, payload.error, model=model, available=available)
            error.__cause__ = payload
            return error
        if isinstance(payload, CursorPipeError):
            return payload
        return ProtocolError(f"agent acp turn failed: {payload!r}", transport=NAME)

    async def _abandon(self, handle: SessionHandle, queue: TurnQueue) -> None:
        """The turn stopped early (timeout, consumer gone, task cancelled, error): send
        ``session/cancel`` and keep reading the session until the prompt is answered (acp.md §4),
        in the background, so a dedicated session's next turn starts clean."""
        conn = handle.conn
        if not conn.alive:
            conn.end_prompt(handle.id, queue)
            return
        await conn.cancel(handle.id)

        async def settle() -> None:
            try:
                async with asyncio.timeout(ACP_CANCEL_GRACE_S):
                    while (await queue.get()).kind == "update":
                        pass
            except TimeoutError:
                log.warning("acp: session %s did not confirm the cancel", handle.id)
            finally:
                conn.end_prompt(handle.id, queue)

        task = asyncio.get_running_loop().create_task(settle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        handle.settling = task


_CHUNK_KINDS = {"agent_message_chunk": "text", "agent_thought_chunk": "thought"}


def _chunk(update: Any) -> tuple[str | None, str]:
    """What a ``session/update`` payload carries for the caller (acp.md §4): ``("text", …)``,
    ``("thought", …)`` or ``(None, "")``. Tool calls, plans, titles and mode updates are Cursor's
    own business and stay inside the transport."""
    if not isinstance(update, dict):
        return None, ""
    kind = update.get("sessionUpdate")
    chunk_kind = _CHUNK_KINDS.get(kind) if isinstance(kind, str) else None
    if chunk_kind is not None:
        content = update.get("content")
        if isinstance(content, dict) and content.get("type") == "text":
            text = content.get("text")
            if isinstance(text, str):
                return chunk_kind, text
        return None, ""
    if kind in ("tool_call", "tool_call_update", "plan"):
        log.debug("acp: %s %s", kind, update.get("title") or update.get("status") or "")
    return None, ""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cursorpipe")
    except Exception:
        return "0"
