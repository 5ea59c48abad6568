"""``SubprocessTransport``: one ``agent --print --output-format stream-json --stream-partial-output``
process per request (acp.md §6, §10 item 2).

Per turn: spawn through :class:`~cursorpipe.transports._process.ManagedProcess` with an explicit
environment (the API key travels as ``CURSOR_API_KEY``, never on argv, acp.md §1.5), ``--mode``
and ``--model`` flags, the prompt after ``--`` or on stdin (:mod:`._prompt`), parse stdout with
the sans-IO :class:`cursorpipe._codecs.stream_json.StreamJsonParser`, stop at the ``result`` event
(acp.md §6.6) and map failures once (:mod:`._errors`). The process is killed when the caller stops
early, times out or is cancelled. Sessions use ``--resume <chat id>`` (acp.md §6.4) with the id
minted by
``agent create-chat`` (or, where that command fails, learnt from the first turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncGenerator, Sequence

from ..._codecs.stream_json import (
    Finished,
    InbandError,
    ParsedEvent,
    SessionStarted,
    StreamJsonParser,
    TextChunk,
    ThinkingChunk,
    ToolActivity,
)
from ..._redact import register_secret
from ...config import CursorPipeConfig
from ...errors import (
    AgentTimeoutError,
    ConfigurationError,
    CursorPipeError,
    ProtocolError,
    SessionError,
    StreamDroppedError,
    StreamStalledError,
)
from ...types import (
    Event,
    ModelInfo,
    TextDelta,
    ThinkingDelta,
    TransportInfo,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageEvent,
    estimate_tokens,
)
from .._process import CLI_STALL_TIMEOUT_S, ManagedProcess, resolve_executable
from ..base import TransportCapabilities, TransportSession
from ._errors import NAME, classify_failure, classify_text, last_line
from ._models import parse_models_output
from ._prompt import flatten_messages, prompt_argv

__all__ = ["SubprocessSession", "SubprocessTransport"]

log = logging.getLogger("cursorpipe.subprocess")

#: Deadline of the short helper commands (``models``, ``create-chat``), capped by the request timeout.
COMMAND_TIMEOUT_S = 60.0
#: acp.md §6.6: after ``result`` the process normally exits at once but sometimes never does.
EXIT_GRACE_S = 1.0
#: After end of stdout without a result: how long to wait for the exit code before killing.
EOF_EXIT_WAIT_S = 5.0
_READ_SIZE = 65536
_CHAT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{7,127}$")


class SubprocessSession:
    """A print-mode conversation: the CLI chat id that ``--resume`` continues."""

    def __init__(self, chat_id: str | None, model: str) -> None:
        self.chat_id = chat_id
        self._model = model
        self._placeholder = f"subprocess-pending-{uuid.uuid4().hex}"
        self.closed = False
        self.turns = 0

    @property
    def id(self) -> str:
        """The CLI chat id (a placeholder until the first turn if ``create-chat`` was unavailable)."""
        return self.chat_id or self._placeholder

    @property
    def model(self) -> str:
        """The session's model."""
        return self._model

    def __repr__(self) -> str:
        return f"SubprocessSession(id={self.id!r}, model={self._model!r}, turns={self.turns})"


class SubprocessTransport:
    """Runs each turn as one ``agent --print`` process. See the module docstring."""

    name = NAME
    #: Silence after which a run fails with StreamStalledError (print mode has no heartbeat;
    #: generous for the same reason as the acp transport's).
    stall_timeout_s: float = CLI_STALL_TIMEOUT_S

    def __init__(self, config: CursorPipeConfig | None = None) -> None:
        self._config = config if config is not None else CursorPipeConfig()
        self._exe: str | None = None
        self._tempdir: str | None = None
        self._procs: set[ManagedProcess] = set()
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # protocol surface
    # ------------------------------------------------------------------------------------------
    @property
    def capabilities(self) -> TransportCapabilities:
        """Sessions via ``--resume``; no caller tool channel; thinking and (recent builds) usage."""
        return TransportCapabilities(
            sessions=True,
            native_tools=False,
            thinking=True,
            real_usage=True,
            images=False,
            system_prompt=True,
        )

    @property
    def running_pids(self) -> list[int]:
        """Process ids of the agent processes currently running (for diagnostics and tests)."""
        return [p.pid for p in self._procs if p.returncode is None]

    async def start(self, *, pool_size: int = 0) -> None:
        """Resolve the executable and the working directory (there is nothing to pre-start: every
        request is its own process). Raises ``AgentNotFoundError`` early if the CLI is missing."""
        self._check_open()
        self._executable()
        self._cwd()

    def run(
        self, request: TurnRequest, *, session: TransportSession | None = None
    ) -> AsyncGenerator[Event, None]:
        """Run one turn in a new ``agent --print`` process."""
        return self._run(request, session)

    async def open_session(self, model: str) -> TransportSession:
        """A new CLI chat (``agent create-chat``, acp.md §6.4) continued by ``--resume``."""
        self._check_open()
        rc, out, err = await self._command(["create-chat"])
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if rc == 0 and lines and _CHAT_ID.match(lines[-1]):
            return SubprocessSession(lines[-1], model)
        problem = classify_text(f"{err}\n{out}", model=model)
        if problem is not None and not isinstance(problem, SessionError):
            raise problem
        # Builds without `create-chat` (or one that failed for no known reason): the chat id comes
        # from the first turn's init event instead (acp.md §6.4 "take session_id from init/result").
        reason = last_line(err) or f"exit {rc}"
        log.info(
            "cursorpipe: `agent create-chat` failed (%s); learning the chat id from the first turn", reason
        )
        return SubprocessSession(None, model)

    async def close_session(self, session: TransportSession) -> None:
        """Forget the chat (the CLI has no documented command to delete one). Idempotent."""
        if isinstance(session, SubprocessSession):
            session.closed = True

    async def list_models(self) -> list[ModelInfo]:
        """``agent models`` parsed (header, blank and tip lines skipped, acp.md §6.5)."""
        self._check_open()
        rc, out, err = await self._command(["models"])
        listing = parse_models_output(out)
        if listing.models:
            return listing.models
        problem = classify_text("\n".join([*listing.error_lines, err]))
        if problem is not None:
            raise problem
        if rc != 0:
            raise classify_failure(exit_code=rc, stderr=err, stdout_extra=out)
        raise ProtocolError(
            "`agent models` listed no models"
            + (f" (it printed: {last_line(out)!r})" if out.strip() else "")
            + ". Check the CLI version and your login (`agent status`).",
            transport=self.name,
        )

    async def aclose(self) -> None:
        """Kill any running agent processes and remove the private working directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        procs = list(self._procs)
        for proc in procs:
            proc.kill()
        for proc in procs:
            with contextlib.suppress(Exception):
                await proc.close()
        self._procs.clear()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    # ------------------------------------------------------------------------------------------
    # internals
    # ------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(
                "The subprocess transport is closed; create a new client.", transport=self.name
            )

    def _executable(self) -> str:
        if self._exe is None:
            self._exe = resolve_executable(self._config.agent_bin)
        return self._exe

    def _cwd(self) -> str:
        if self._config.workspace:
            path = os.path.abspath(os.path.expanduser(self._config.workspace))
            if not os.path.isdir(path):
                raise ConfigurationError(
                    f"CURSORPIPE_WORKSPACE {path!r} is not a directory.", code="invalid_config"
                )
            return path
        if self._tempdir is None:
            # A private empty directory: print mode reads the workspace, so never default to the
            # caller's current directory.
            self._tempdir = tempfile.mkdtemp(prefix="cursorpipe-agent-")
        return self._tempdir

    def _env(self) -> dict[str, str]:
        """The child's explicit environment: ours minus cursorpipe's own settings, credentials
        from the configuration only (acp.md §7: ``CURSOR_API_KEY`` / ``CURSOR_AUTH_TOKEN``)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CURSORPIPE_") and k not in ("CURSOR_API_KEY", "CURSOR_AUTH_TOKEN")
        }
        key = self._config.api_key.get_secret_value()
        token = self._config.auth_token.get_secret_value()
        if key:
            register_secret(key)
            env["CURSOR_API_KEY"] = key
        if token:
            register_secret(token)
            env["CURSOR_AUTH_TOKEN"] = token
        # acp.md §2/§7: a library must never start a browser login.
        env.setdefault("NO_OPEN_BROWSER", "1")
        env.setdefault("NO_COLOR", "1")
        return env

    async def _spawn(self, args: Sequence[str], *, stdin: bool) -> ManagedProcess:
        self._check_open()
        proc = await ManagedProcess.spawn(
            [self._executable(), *args], env=self._env(), cwd=self._cwd(), name="agent", stdin=stdin
        )
        self._procs.add(proc)
        return proc

    async def _finish(self, proc: ManagedProcess, *, graceful: bool) -> int | None:
        try:
            if not graceful:
                proc.kill()
                return await proc.close()
            return await proc.close(stdin_wait_s=EXIT_GRACE_S, terminate_wait_s=2.0)
        finally:
            self._procs.discard(proc)

    async def _command(self, args: Sequence[str]) -> tuple[int | None, str, str]:
        """Run a short helper command; (exit code, stdout, redacted stderr tail)."""
        timeout_s = min(COMMAND_TIMEOUT_S, self._config.request_timeout_s)
        proc = await self._spawn(args, stdin=False)
        chunks: list[bytes] = []
        done = False
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await proc.read(_READ_SIZE):
                    chunks.append(chunk)
                await proc.wait()
            done = True
        except TimeoutError as exc:
            raise AgentTimeoutError(
                f"`agent {args[0]}` did not finish within {timeout_s:g} s.", transport=self.name
            ) from exc
        finally:
            rc = await self._finish(proc, graceful=done)
        return rc, b"".join(chunks).decode("utf-8", "replace"), proc.stderr_tail()

    def _argv(self, request: TurnRequest, session: SubprocessSession | None, tail: list[str]) -> list[str]:
        argv = ["--print", "--output-format", "stream-json", "--stream-partial-output", "--trust"]
        # acp.md §3.3: only `plan|ask` are valid; the config rejects `agent` (full tool access).
        argv += ["--mode", request.mode]
        model = request.model.strip()
        if model and model.lower() != "default":
            argv += ["--model", model]
        if session is not None and session.chat_id:
            argv += ["--resume", session.chat_id]
        if self._config.workspace:
            argv += ["--workspace", self._cwd()]
        return argv + tail

    async def _run(
        self, request: TurnRequest, session: TransportSession | None
    ) -> AsyncGenerator[Event, None]:
        self._check_open()
        sub = self._own_session(session)
        # Stateless multi-message requests are flattened into one prompt (print mode takes one
        # prompt and has no history/system flags); session turns carry only the new message.
        prompt = flatten_messages(request.messages)
        tail, stdin_data = prompt_argv(prompt)
        argv = self._argv(request, sub, tail)
        flags = " ".join(argv[: len(argv) - len(tail)])
        via = "stdin" if stdin_data is not None else "argv"
        log.debug("cursorpipe: agent %s (prompt: %d chars via %s)", flags, len(prompt), via)
        proc = await self._spawn(argv, stdin=stdin_data is not None)
        writer: asyncio.Task[None] | None = None
        graceful = False
        try:
            if stdin_data is not None:
                writer = asyncio.create_task(_feed_stdin(proc, stdin_data), name="agent-stdin")
            yield TransportInfo(transport=self.name, model=request.model, session_id=sub.id if sub else None)
            parser = StreamJsonParser()
            inband: InbandError | None = None
            while parser.finished is None and inband is None:
                chunk = await self._read(proc)
                for ev in parser.feed(chunk) if chunk else parser.close():
                    if isinstance(ev, InbandError):
                        inband = ev
                        break
                    event = _to_event(ev, sub)
                    if event is not None:
                        yield event
                if not chunk:
                    break
            finished = await self._result(proc, parser, inband, request.model)
            if sub is not None:
                if sub.chat_id is None and finished.session_id:
                    sub.chat_id = finished.session_id
                sub.turns += 1
            usage = finished.usage or _estimate(prompt, parser.text)
            graceful = True
            yield UsageEvent(usage)
            yield TurnEnd("stop", usage)
        finally:
            if writer is not None and not writer.done():
                writer.cancel()
            await self._finish(proc, graceful=graceful)
            if writer is not None:
                # wait() neither raises the writer's outcome nor swallows our own cancellation
                await asyncio.wait([writer])

    def _own_session(self, session: TransportSession | None) -> SubprocessSession | None:
        if session is None:
            return None
        if not isinstance(session, SubprocessSession):
            raise SessionError(
                "This session does not belong to the subprocess transport.", transport=self.name
            )
        if session.closed:
            raise SessionError(f"Session {session.id} was discarded; open a new one.", transport=self.name)
        return session

    async def _read(self, proc: ManagedProcess) -> bytes:
        try:
            async with asyncio.timeout(self.stall_timeout_s):
                return await proc.read(_READ_SIZE)
        except TimeoutError:
            raise StreamStalledError(
                f"agent --print wrote nothing for {self.stall_timeout_s:g} s; the run was stopped "
                "(a live but silent agent would hold the request until its deadline).",
                transport=self.name,
            ) from None

    async def _result(
        self, proc: ManagedProcess, parser: StreamJsonParser, inband: InbandError | None, model: str
    ) -> Finished:
        """The run's ``result`` event, or the classified failure (in-band error, exit without a
        result, or a result that reports an error)."""
        if inband is not None:
            raise _inband_error(inband.text, model)
        finished = parser.finished
        if finished is None:
            rc = await self._finish(proc, graceful=True)  # exit code, and stderr drained fully
            raise classify_failure(
                exit_code=rc, stderr=proc.stderr_tail(), stdout_extra="\n".join(parser.stray), model=model
            )
        if finished.is_error:
            raise classify_text(finished.result, model=model) or classify_failure(
                exit_code=proc.returncode, stderr=proc.stderr_tail(), stdout_extra=finished.result
            )
        return finished


def _to_event(ev: ParsedEvent, sub: SubprocessSession | None) -> Event | None:
    """The public event for a parsed stream-json event (``None`` for bookkeeping ones)."""
    if isinstance(ev, TextChunk):
        return TextDelta(ev.text)
    if isinstance(ev, ThinkingChunk):
        return ThinkingDelta(ev.text)
    if isinstance(ev, SessionStarted):
        if sub is not None and sub.chat_id is None:
            sub.chat_id = ev.session_id
    elif isinstance(ev, ToolActivity):
        log.debug("cursorpipe: agent tool %s %s", ev.name, ev.subtype)
    return None


async def _feed_stdin(proc: ManagedProcess, data: bytes) -> None:
    """Write the prompt and close stdin; an early exit of the child is reported by its exit code."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        await proc.write(data)
    proc.close_stdin()


def _estimate(prompt: str, answer: str) -> Usage:
    return Usage(input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens(answer), estimated=True)


def _inband_error(text: str, model: str) -> CursorPipeError:
    """acp.md §4/§9: an error Cursor wrote into the answer while reporting success."""
    known = classify_text(text, model=model)
    if known is not None:
        known.details.setdefault("inband", True)
        return known
    return StreamDroppedError(
        f"Cursor ended the answer with an error: {last_line(text)} Retry the request.",
        code="inband_error",
        transport=NAME,
        details={"inband": True},
    )
