"""``cursorpipe chat``: one answer to a prompt, or a conversation in the terminal.

The conversation loop is synchronous on the main thread, so line editing (prompt_toolkit, else
readline) and Ctrl-C behave as in any terminal program; each answer runs on the one sync bridge
(:class:`~cursorpipe.SyncBridge`). Ctrl-C during an answer cancels that turn only (the bridge
cancels the coroutine and waits for the upstream run to stop) and the conversation goes on;
Ctrl-C or Ctrl-D at the prompt ends the program with status 0.

Output rules: the answer goes to stdout, everything else (thinking, status, usage, errors) to
stderr, so ``cursorpipe chat "..." > answer.txt`` stays clean. Colours and the spinner appear only
on a terminal and colours never when ``NO_COLOR`` is set (https://no-color.org) or ``TERM=dumb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from ._bridge import SyncBridge
from ._redact import redact
from ._sync_client import SyncCursorClient, SyncCursorSession
from .config import CursorPipeConfig
from .errors import CursorPipeError
from .types import Event, TextDelta, ThinkingDelta, TransportInfo, TurnEnd, Usage, UsageEvent

__all__ = ["HELP", "Printer", "run_chat", "use_color"]

HELP = """\
Commands (everything else is sent to the model):
  /help             this help
  /model [ID]       show the model, or start a new conversation with model ID
  /system [TEXT]    show the system prompt, or start a new conversation with it (/system off: without)
  /reset            forget the conversation and start a new one
  /exit, /quit      leave (Ctrl-D or Ctrl-C at the prompt too)
Ctrl-C while an answer streams stops that answer; the conversation is kept."""

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_INTERVAL_S = 0.08


def use_color(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` gets ANSI colours: a terminal, no ``NO_COLOR`` (any non-empty value),
    not ``TERM=dumb``."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Printer:
    """Answer on stdout; thinking (dimmed), status, usage and errors on stderr."""

    def __init__(self, out: TextIO, err: TextIO, show_thinking: bool, *, color: bool | None = None) -> None:
        self.out, self.err = out, err
        self.show_thinking = show_thinking
        self.color = use_color(err) if color is None else color
        self.spinner = _isatty(err)
        self.in_thinking = False
        self.answered = False

    def style(self, text: str, code: str) -> str:
        """``text`` in the SGR style ``code`` when colours are on."""
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def thinking(self, text: str) -> None:
        if not self.show_thinking or not text:
            return
        if not self.in_thinking:
            self.in_thinking = True
            self.err.write("\x1b[2m[thinking] " if self.color else "[thinking] ")
        self.err.write(text)
        self.err.flush()

    def _end_thinking(self) -> None:
        if self.in_thinking:
            self.in_thinking = False
            self.err.write("\x1b[0m\n" if self.color else "\n")
            self.err.flush()

    def text(self, text: str) -> None:
        self._end_thinking()
        self.answered = True
        self.out.write(text)
        self.out.flush()

    def end_of_answer(self) -> None:
        """Close the answer's line (and a dangling thinking block)."""
        self._end_thinking()
        self.out.write("\n")
        self.out.flush()
        self.answered = False

    def finish(self, usage: Usage | None, model: str, seconds: float, stop: str) -> None:
        self.end_of_answer()
        if usage is not None:
            est = " (estimated)" if usage.estimated else ""
            line = (
                f"[usage] {usage.input_tokens} in / {usage.output_tokens} out / {usage.total_tokens} total "
                f"tokens{est} · model {model} · {seconds:.1f} s"
                + (f" · stopped: {stop}" if stop != "stop" else "")
            )
            self.status(line)

    def status(self, line: str, code: str = "2") -> None:
        """One line of status on stderr (dim by default)."""
        self.err.write(self.style(line, code) + "\n")
        self.err.flush()

    def error(self, message: str) -> None:
        self.status(f"error: {redact(message)}", "31")

    def interrupted(self) -> None:
        """After Ctrl-C stopped an answer: end its line and say so."""
        self._end_thinking()
        if self.answered:
            self.out.write("\n")
            self.out.flush()
            self.answered = False
        self.status("[interrupted: answer stopped; the conversation goes on]", "33")


async def _spin(err: TextIO, color: bool) -> None:
    """Spinner on stderr until cancelled (the first token arrived); erases itself."""
    i = 0
    start = time.perf_counter()
    try:
        while True:
            frame = _SPINNER[i % len(_SPINNER)]
            label = f"{frame} waiting for the model… {time.perf_counter() - start:.0f} s"
            err.write("\r" + (f"\x1b[2m{label}\x1b[0m" if color else label))
            err.flush()
            i += 1
            await asyncio.sleep(_SPINNER_INTERVAL_S)
    finally:
        err.write("\r\x1b[K")
        err.flush()


async def turn(events: AsyncIterator[Event], printer: Printer, model: str) -> None:
    """Print one answer as it streams (spinner until the first token, usage at the end)."""
    start = time.perf_counter()
    usage: Usage | None = None
    stop = "stop"
    spinner = asyncio.create_task(_spin(printer.err, printer.color)) if printer.spinner else None

    async def stop_spinner() -> None:
        nonlocal spinner
        if spinner is not None:
            spinner.cancel()
            # Wait for the erase, or its "\r\x1b[K" could land inside the answer's first line.
            await asyncio.wait([spinner])
            spinner = None

    try:
        async with aclosing(events) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, TransportInfo) and event.model:
                    model = event.model
                elif isinstance(event, ThinkingDelta):
                    if event.text:
                        await stop_spinner()
                    printer.thinking(event.text)
                elif isinstance(event, TextDelta) and not event.notice:
                    if event.text:
                        await stop_spinner()
                    printer.text(event.text)
                elif isinstance(event, UsageEvent):
                    usage = event.usage
                elif isinstance(event, TurnEnd):
                    usage = event.usage or usage
                    stop = event.stop_reason
    finally:
        await stop_spinner()
    printer.finish(usage, model, time.perf_counter() - start, stop)


# ----------------------------------------------------------------------------------------------
# reading lines
# ----------------------------------------------------------------------------------------------
class _LineReader(Protocol):
    def read(self, prompt: str) -> str:
        """The next line; ``EOFError`` at end of input, ``KeyboardInterrupt`` on Ctrl-C."""

    def close(self) -> None: ...


def history_path() -> Path:
    """Where the conversation prompts are remembered between runs (mode 0600; the readline
    fallback uses the same name plus ``.readline``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cursorpipe" / "chat_history"


def _private_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    return path


class _StreamReader:
    """A pipe or a scripted stream: plain lines, prompt on stderr."""

    def __init__(self, stdin: TextIO, err: TextIO) -> None:
        self.stdin, self.err = stdin, err

    def read(self, prompt: str) -> str:
        self.err.write(prompt)
        self.err.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def close(self) -> None:
        return None


class _ReadlineReader:
    """``input()`` with GNU readline editing and a history file (prompt_toolkit absent)."""

    def __init__(self, history: Path | None) -> None:
        # Its own file: prompt_toolkit's history format ("+line" entries) is not readline's.
        self.history = history.with_name(history.name + ".readline") if history is not None else None
        try:
            self.readline: Any = importlib.import_module("readline")
        except ImportError:  # e.g. Windows without pyreadline: input() still works, unedited
            self.readline = None
        if self.readline is not None and self.history is not None:
            with contextlib.suppress(OSError):
                self.readline.read_history_file(str(_private_file(self.history)))

    def read(self, prompt: str) -> str:
        # readline must be told which prompt bytes take no columns, or editing long lines garbles.
        return input(re.sub(r"(\x1b\[[0-9;]*m)", "\x01\\1\x02", prompt) if self.readline else prompt)

    def close(self) -> None:
        if self.readline is not None and self.history is not None:
            with contextlib.suppress(OSError):
                self.readline.set_history_length(1000)
                self.readline.write_history_file(str(self.history))


class _PromptToolkitReader:
    """prompt_toolkit: Emacs/Vi line editing, history search, persistent history."""

    def __init__(self, history: Path | None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        hist = FileHistory(str(_private_file(history))) if history is not None else InMemoryHistory()
        self.session: Any = PromptSession(history=hist)

    def read(self, prompt: str) -> str:
        from prompt_toolkit.formatted_text import ANSI

        return str(self.session.prompt(ANSI(prompt)))

    def close(self) -> None:
        return None


def _line_reader(stdin: TextIO, err: TextIO, *, history: bool) -> _LineReader:
    interactive_terminal = stdin is sys.stdin and _isatty(stdin) and _isatty(sys.stdout)
    if not interactive_terminal:
        return _StreamReader(stdin, err)
    path = history_path() if history else None
    try:
        return _PromptToolkitReader(path)
    except ImportError:  # the cursorpipe[cli] extra is not installed
        return _ReadlineReader(path)
    except OSError:  # an unwritable history location must not stop the chat
        return _PromptToolkitReader(None)


# ----------------------------------------------------------------------------------------------
# the conversation
# ----------------------------------------------------------------------------------------------
@dataclass
class _Conversation:
    client: SyncCursorClient
    model: str
    system: str | None
    printer: Printer
    session: SyncCursorSession | None = field(default=None)

    def open(self) -> SyncCursorSession:
        if self.session is None:
            self.session = self.client.create_session(self.model)
        return self.session

    def reset(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(CursorPipeError):
                session.discard()

    def ask(self, text: str) -> None:
        session = self.open()
        bridge = self.client.bridge
        system = self.system
        bridge.run(lambda: turn(session.async_session.events(text, system=system), self.printer, self.model))

    def command(self, line: str) -> bool:
        """Handle a ``/command``; ``False`` means: leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        p = self.printer
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            p.status(HELP, "0")
        elif name == "/reset":
            self.reset()
            p.status("[new conversation]")
        elif name == "/model":
            if not arg:
                p.status(f"model: {self.model}")
            else:
                self.reset()
                self.model = arg
                p.status(f"[new conversation with model {arg}]")
        elif name == "/system":
            if not arg:
                p.status(f"system prompt: {self.system!r}" if self.system else "no system prompt")
            else:
                # A conversation keeps the system prompt it started with: Cursor holds it in the
                # conversation's history (live-dialect.md rows 2 and 5), so a change mid-conversation
                # would leave the model reading both. Changing it starts a new conversation, as
                # /model does.
                self.reset()
                self.system = None if arg.lower() in ("off", "none", "-") else arg
                p.status(
                    "[system prompt cleared; new conversation]"
                    if self.system is None
                    else "[system prompt set; new conversation]"
                )
        else:
            p.status(f"unknown command {name}; /help lists the commands", "33")
        return True


def _interactive(
    client: SyncCursorClient, model: str, system: str | None, printer: Printer, reader: _LineReader
) -> int:
    convo = _Conversation(client, model, system, printer)
    banner = f"cursorpipe chat · model {model}" + (" · system prompt set" if system else "")
    printer.status(banner + " · /help for commands, Ctrl-D to quit", "1")
    prompt = printer.style(">", "1;36") + " "
    try:
        while True:
            try:
                line = reader.read(prompt).strip()
            except (EOFError, KeyboardInterrupt):
                printer.err.write("\n")
                return 0
            if not line:
                continue
            if line.startswith("/") and not line.startswith("//"):
                if not convo.command(line):
                    return 0
                continue
            text = line[1:] if line.startswith("//") else line  # "//x" sends "/x"
            try:
                convo.ask(text)
            except KeyboardInterrupt:
                printer.interrupted()
            except CursorPipeError as exc:
                printer.end_of_answer()
                printer.error(exc.message)
    finally:
        reader.close()
        with contextlib.suppress(CursorPipeError, KeyboardInterrupt):
            convo.reset()


def run_chat(
    config: CursorPipeConfig,
    *,
    prompt: str,
    model: str | None,
    system: str | None,
    stdin: TextIO,
    printer: Printer,
    history: bool = True,
    make_reader: Callable[[], _LineReader] | None = None,
) -> int:
    """The ``chat`` command: answer ``prompt`` (or piped stdin), or hold a conversation when
    stdin is a terminal and no prompt was given."""
    name = model or config.default_model
    bridge = SyncBridge(name="cursorpipe-chat")
    try:
        with SyncCursorClient(config, bridge=bridge) as client:
            if not prompt and not _isatty(stdin):
                prompt = stdin.read().strip()
            if prompt:
                events = client.async_client.events
                bridge.run(lambda: turn(events(name, prompt=prompt, system=system), printer, name))
                return 0
            reader = make_reader() if make_reader else _line_reader(stdin, printer.err, history=history)
            return _interactive(client, name, system, printer, reader)
    finally:
        bridge.close()
