"""The one subprocess helper both CLI transports use (design.md lesson 7).

Explicit environment (secrets travel in the environment, never on argv), a large line limit,
stderr drained continuously into a bounded tail (so the child never blocks on a full pipe and a
crash report can quote it, redacted), and a staged shutdown: close stdin, wait, terminate, wait,
kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from .._constants import (
    PROCESS_CLOSE_STDIN_WAIT_S,
    PROCESS_LINE_LIMIT,
    PROCESS_TERMINATE_WAIT_S,
    STDERR_TAIL_BYTES,
)
from .._redact import redact
from ..errors import AgentNotFoundError

__all__ = ["CLI_STALL_TIMEOUT_S", "ManagedProcess", "resolve_executable"]

#: Silence after which an agent turn (acp or print mode) is declared stalled (issue 12 item 8).
CLI_STALL_TIMEOUT_S = 120.0


def resolve_executable(name: str) -> str:
    """Absolute path of ``name`` (a path or a command on PATH); raises ``AgentNotFoundError``."""
    if os.sep in name or (os.altsep and os.altsep in name):
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return os.path.abspath(name)
    else:
        found = shutil.which(name)
        if found:
            return found
    raise AgentNotFoundError(
        f"Cursor's command-line agent {name!r} was not found. Install it "
        "(curl https://cursor.com/install -fsS | bash), set CURSORPIPE_AGENT_BIN to its path, or use "
        "the connect transport (CURSORPIPE_STRATEGY=connect with CURSOR_API_KEY)."
    )


#: Stdout bytes as they arrive (``b""`` once at end of file); see ``ManagedProcess.set_stdout_sink``.
StdoutSink = Callable[[bytes], None]


class _DirectStdoutProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol, except that stdout goes straight to a callback from the
    event loop's read callback instead of through a ``StreamReader`` and a reader task: a
    long-lived child that streams many small lines (``agent acp``) then costs no task wake-up per
    read (issue 16). Data that arrives before a sink is set is kept and handed over with it."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.sink: StdoutSink | None = None
        self.early: list[bytes] = []

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd != 1:
            super().pipe_data_received(fd, data)
        elif self.sink is not None:
            self.sink(data)  # type: ignore[arg-type]  # pipes opened in binary mode give bytes
        else:
            self.early.append(data)  # type: ignore[arg-type]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            # End of file and a read error end the stream alike: the caller learns why from the
            # exit code and stderr.
            if self.sink is not None:
                self.sink(b"")
            else:
                self.early.append(b"")
        super().pipe_connection_lost(fd, exc)


class ManagedProcess:
    """A child process with line-oriented stdout, drained stderr and staged shutdown."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self._proc = proc
        self.name = name
        self._direct: _DirectStdoutProtocol | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name=f"{name}-stderr")
        self._closed = False

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        name: str = "agent",
        stdin: bool = True,
        direct_stdout: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` with exactly ``env``. Raises ``AgentNotFoundError`` if it cannot start.

        ``direct_stdout=True``: stdout is delivered to the callback given to
        :meth:`set_stdout_sink` as it arrives (``read``/``readline`` are then unusable)."""
        exe = resolve_executable(argv[0])
        loop = asyncio.get_running_loop()
        protocols: list[_DirectStdoutProtocol] = []

        def direct() -> _DirectStdoutProtocol:
            protocols.append(_DirectStdoutProtocol(PROCESS_LINE_LIMIT, loop))
            return protocols[-1]

        def streams() -> asyncio.subprocess.SubprocessStreamProtocol:
            return asyncio.subprocess.SubprocessStreamProtocol(limit=PROCESS_LINE_LIMIT, loop=loop)

        try:
            # What asyncio.create_subprocess_exec does, with the protocol chosen here.
            transport, protocol = await loop.subprocess_exec(
                direct if direct_stdout else streams,
                exe,
                *argv[1:],
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise AgentNotFoundError(f"Could not start {argv[0]!r}: {exc.strerror or exc}.") from exc
        managed = cls(asyncio.subprocess.Process(transport, protocol, loop), name)
        managed._direct = protocols[0] if protocols else None
        return managed

    def set_stdout_sink(self, sink: StdoutSink) -> None:
        """Deliver stdout to ``sink`` from now on (what arrived before is delivered first). The
        sink runs inside the event loop's read callback: it must not raise."""
        direct = self._direct
        if direct is None:
            raise RuntimeError("set_stdout_sink needs a process spawned with direct_stdout=True")
        direct.sink = sink
        early, direct.early = direct.early, []
        for data in early:
            sink(data)

    @property
    def pid(self) -> int:
        """Process id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or ``None`` while running."""
        return self._proc.returncode

    async def readline(self) -> bytes:
        """Next stdout line including its newline; ``b""`` at end of file.

        A line longer than the limit is an error of the child (``ValueError`` from asyncio is
        turned into ``OverflowError`` so callers can classify it).
        """
        assert self._proc.stdout is not None
        try:
            return await self._proc.stdout.readline()
        except ValueError as exc:  # LimitOverrunError surfaces as ValueError from readline
            raise OverflowError(f"{self.name} wrote a line longer than {PROCESS_LINE_LIMIT} bytes") from exc

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` raw stdout bytes; ``b""`` at end of file."""
        assert self._proc.stdout is not None
        return await self._proc.stdout.read(n)

    async def write(self, data: bytes) -> None:
        """Write to stdin and drain. Raises ``BrokenPipeError``/``ConnectionResetError`` if it is gone."""
        self.write_nowait(data)
        await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        """Queue ``data`` for stdin (written at once when the pipe takes it); ``True`` when the
        unwritten backlog is over the high-water mark and the caller should :meth:`drain`.
        Raises ``BrokenPipeError`` if stdin is gone."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            raise BrokenPipeError(f"{self.name} stdin is closed")
        stdin.write(data)
        transport = stdin.transport
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

    async def drain(self) -> None:
        """Wait until stdin's backlog is under the low-water mark."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            raise BrokenPipeError(f"{self.name} stdin is closed")
        await stdin.drain()

    def close_stdin(self) -> None:
        """Close stdin (end of input for the child) without stopping the process. Idempotent."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(Exception):
                stdin.close()

    async def wait(self) -> int:
        """Wait for exit and return the exit code."""
        return await self._proc.wait()

    def stderr_tail(self) -> str:
        """The last few KiB of stderr, decoded and redacted."""
        return redact(b"".join(self._stderr).decode("utf-8", "replace"))

    async def _drain_stderr(self) -> None:
        stream = self._proc.stderr
        if stream is None:
            return
        while True:
            chunk = await stream.read(4096)
            if not chunk:
                return
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def kill(self) -> None:
        """Kill the whole process group immediately (used on cancellation paths)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, 9)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def close(
        self,
        *,
        stdin_wait_s: float = PROCESS_CLOSE_STDIN_WAIT_S,
        terminate_wait_s: float = PROCESS_TERMINATE_WAIT_S,
    ) -> int | None:
        """Staged shutdown: close stdin, wait; SIGTERM, wait; SIGKILL. Idempotent; shielded from
        cancellation so a cancelled caller never leaves a zombie behind."""
        if self._closed:
            return self._proc.returncode
        self._closed = True
        await asyncio.shield(self._shutdown(stdin_wait_s, terminate_wait_s))
        return self._proc.returncode

    async def _shutdown(self, stdin_wait_s: float, terminate_wait_s: float) -> None:
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.is_closing():
            with contextlib.suppress(Exception):
                proc.stdin.close()
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), stdin_wait_s)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 15)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), terminate_wait_s)
        if proc.returncode is None:
            self.kill()
            await proc.wait()
        # asyncio.wait, not wait_for: the reader's own end (even a cancelled one) is no error here,
        # and nothing swallows a cancel aimed at the caller (close() shields this coroutine).
        reader = self._stderr_task
        done, _ = await asyncio.wait({reader}, timeout=1.0)
        if not done:
            reader.cancel()
        elif not reader.cancelled():
            reader.exception()  # retrieved: a failed reader must not log "exception never retrieved"
        # The child is reaped: close its pipes now, even if a grandchild still holds one open or
        # nobody read stdout to its end (a stalled run), instead of leaving them to the GC.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
