"""A fake Cursor ``agent`` executable for offline tests (console script ``cursorpipe-fake-agent``).

It reproduces the documented behaviour of Cursor's command-line agent, quirks included
(``docs/acp.md``): ``agent acp`` (module :mod:`.acp`), ``agent --print`` with
``--output-format text|json|stream-json``, ``--stream-partial-output`` (deltas, a duplicated delta
carrying ``model_call_id`` and the final cumulative message, §6.3), thinking events, a ``result``
with camelCase ``usage``, ``--resume <chat id>`` / ``create-chat`` backed by an on-disk chat store,
``--model`` / ``--mode ask|plan`` / ``--force`` / ``--trust``, the prompt as positional operand (after
``--``) or on stdin when no operand is given (§3.3), the documented error texts and exit codes
(auth, usage limit, unknown model, §5), ``models`` / ``--list-models`` with header and tip lines,
``status [--format json]``, ``about [--format json]`` and ``--version``. Use it as
``CURSORPIPE_AGENT_BIN`` (see :func:`executable`).

Credentials come from ``CURSOR_API_KEY`` / ``CURSOR_AUTH_TOKEN`` in the environment (``--api-key``
is accepted too, as the real CLI does; cursorpipe never uses it). Where the docs are uncertain the
code follows them and marks the spot with the acp.md section.

Knobs (environment variables; names are constants in :mod:`.catalog`):

==============================  =================================================================
``FAKE_AGENT_ACCOUNT``          ``ok`` (default: a stored login), ``logged_out`` (only a key or
                                token works), ``usage_limit``, ``rate_limited``
``FAKE_AGENT_EXPECT_API_KEY``   if set, any other ``CURSOR_API_KEY`` is rejected as invalid
``FAKE_AGENT_LATENCY_S``        sleep before each streamed chunk (default 0)
``FAKE_AGENT_FIRST_DELAY_S``    sleep before the first chunk (default 0)
``FAKE_AGENT_CRASH_AFTER``      exit abruptly after N answer chunks (0 = before the first)
``FAKE_AGENT_CRASH_CODE``       exit code of that crash (default 1); the crash dump on stderr
                                includes the API key, to test redaction
``FAKE_AGENT_HANG_AFTER``       stop making progress forever after N answer chunks
``FAKE_AGENT_NO_EXIT``          ``1``: never exit after the result line (acp.md §6.6)
``FAKE_AGENT_INBAND_ERROR``     append an error to the answer text with a success result
                                (acp.md §4/§9): ``resource_exhausted``, ``writable_closed``,
                                ``usage_limit``, ``model_not_found`` or any literal text
``FAKE_AGENT_NETWORK_ERROR``    ``1``: fail with the network error text (acp.md §5)
``FAKE_AGENT_USAGE``            ``nested`` (default), ``top`` (top-level keys) or ``none``
``FAKE_AGENT_TOOL_CALL``        ``1``: a ``read`` tool call splits the answer into two messages
``FAKE_AGENT_ANSI``             ``1``: ANSI codes in ``models`` output
``FAKE_AGENT_STATE_DIR``        chat store (default ``$CURSOR_DATA_DIR/fake-agent-chats`` or
                                ``~/.cursor/fake-agent-chats``)
``FAKE_AGENT_RECORD``           append one JSON line per print-mode run (argv, cwd, prompt
                                source, flags) to this file
==============================  =================================================================

The answer to a prompt is :func:`.catalog.expected_reply`, so tests never hard-code it. The
package imports only the standard library (and its own modules), so :func:`executable` can start
it without importing cursorpipe, in tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["console_script", "executable", "main"]

_SCRIPT = "cursorpipe-fake-agent"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the fake ``agent``: ``acp`` goes to :mod:`.acp`, everything else to the CLI
    emulation. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    from ._cli import run_cli, subcommand

    # acp.md §2: `acp` takes no options of its own; global flags go before it.
    if args[:1] == ["acp"] or subcommand(args) == "acp":
        try:
            from .acp import run  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            print(f"fake agent: the acp mode is not available ({exc})", file=sys.stderr)
            return 2
        return int(run(args))
    return run_cli(args)


def console_script() -> str | None:
    """Absolute path of the installed ``cursorpipe-fake-agent`` console script, if there is one
    (next to ``sys.executable`` in a venv, else on PATH)."""
    exe_dir = Path(sys.executable).parent
    for name in (_SCRIPT, _SCRIPT + ".exe"):
        candidate = exe_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(_SCRIPT)
    return os.path.abspath(found) if found else None


def executable() -> str:
    """Absolute path of an executable fake ``agent`` (use it as ``CURSORPIPE_AGENT_BIN``).

    On POSIX this is a small launcher script (named ``agent``, cached in the temp directory per
    interpreter and source location) that runs this package with ``sys.executable`` *without*
    importing cursorpipe, so each start costs tens of milliseconds instead of the ~1 s the
    console script spends importing the whole library. Where the launcher cannot be written it
    returns the installed console script, and failing that a wrapper running
    ``sys.executable -m cursorpipe.testing.fake_agent``.
    """
    if os.name != "nt":
        try:
            return _fast_launcher()
        except OSError:
            pass
    script = console_script()
    if script is not None:
        return script
    return _module_wrapper()


def _cache_dir(kind: str) -> Path:
    here = str(Path(__file__).resolve().parent)
    tag = hashlib.sha256(f"{sys.executable}\0{here}\0{kind}".encode()).hexdigest()[:16]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"cursorpipe-fake-agent-{uid}-{tag}"


def _write_executable(path: Path, content: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The temp directory is shared: only trust a cache directory we own and nobody else can write.
    info = path.parent.stat()
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        raise PermissionError(f"refusing to use {path.parent}: not private to this user")
    if path.is_file() and path.read_text("utf-8") == content and os.access(path, os.X_OK):
        return str(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(content, "utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return str(path)


def _fast_launcher() -> str:
    launch = Path(__file__).resolve().parent / "_launch.py"
    content = f'#!/bin/sh\nexec "{sys.executable}" "{launch}" "$@"\n'
    return _write_executable(_cache_dir("fast") / "agent", content)


def _module_wrapper() -> str:
    if os.name == "nt":
        content = f'@"{sys.executable}" -m cursorpipe.testing.fake_agent %*\r\n'
        return _write_executable(_cache_dir("module") / "agent.cmd", content)
    content = f'#!/bin/sh\nexec "{sys.executable}" -m cursorpipe.testing.fake_agent "$@"\n'
    return _write_executable(_cache_dir("module") / "agent", content)
