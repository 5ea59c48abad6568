"""The ``cursorpipe`` command: ``doctor``, ``models``, ``chat`` and ``serve``.

    cursorpipe doctor                 # what works, what does not, and how to fix it
    cursorpipe doctor --live          # also probe the live service's dialect (short real turns)
    cursorpipe models                 # the models your account can use
    cursorpipe chat "Explain asyncio" # stream an answer (thinking on stderr, usage at the end)
    cursorpipe chat                   # a conversation (/help, Ctrl-C stops an answer, Ctrl-D quits)
    cursorpipe serve --port 8080      # the OpenAI-compatible server (same as cursorpipe-server)

Every command reads ``CURSORPIPE_*`` settings from the environment and ``.env``; ``--emulator``
runs ``doctor``, ``models`` and ``chat`` against the built-in Cursor API emulator (offline, fake
answers).
Secrets are never taken on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import __version__
from ._chat_repl import Printer, run_chat
from ._redact import redact
from .client import CursorClient
from .config import CursorPipeConfig, Strategy
from .errors import ConfigurationError, CursorPipeError

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", choices=[s.value for s in Strategy], help="transport (CURSORPIPE_STRATEGY)")
    p.add_argument("--emulator", action="store_true", help="use the built-in Cursor API emulator (offline)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cursorpipe``."""
    p = argparse.ArgumentParser(
        prog="cursorpipe",
        allow_abbrev=False,
        description="Use the models of your Cursor subscription from the terminal.",
        epilog="Settings come from CURSORPIPE_* environment variables and .env (CURSOR_API_KEY for the key).",
    )
    p.add_argument("--version", action="version", version=f"cursorpipe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    doctor = sub.add_parser(
        "doctor", help="check credentials, token, agent binary and backend; say what to fix"
    )
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per network check (default 10)")
    doctor.add_argument(
        "--emulator",
        action="store_true",
        help="check against the built-in Cursor API emulator (offline; shows what a healthy setup prints)",
    )
    doctor.add_argument(
        "--live",
        action="store_true",
        help="also run the live dialect checks: about 20 short real turns with your account "
        "(docs/live-dialect.md), a table and a JSON report",
    )
    doctor.add_argument(
        "--report",
        default="cursorpipe-live-report.json",
        help="where --live writes its JSON report (no secrets; default cursorpipe-live-report.json)",
    )
    doctor.add_argument("-m", "--model", help="model for --live (default CURSORPIPE_DEFAULT_MODEL)")
    doctor.add_argument(
        "--cache-model",
        help="model for the --live cache-usage check (default: the first Claude model listed)",
    )

    models = sub.add_parser("models", help="list the models your account can use")
    _common(models)
    models.add_argument("--json", action="store_true", help="print JSON")

    chat = sub.add_parser(
        "chat",
        help="stream an answer to a prompt (a conversation without one)",
        description="Stream an answer to PROMPT (or to stdin). Without a prompt on a terminal: a "
        "conversation with line editing and history; /help lists its commands, Ctrl-C stops an "
        "answer, Ctrl-D quits. Colours follow NO_COLOR. Richer line editing: pip install 'cursorpipe[cli]'.",
    )
    _common(chat)
    chat.add_argument("prompt", nargs="*", help="the prompt (default: read stdin, or start a conversation)")
    chat.add_argument("-m", "--model", help="model id (default CURSORPIPE_DEFAULT_MODEL)")
    chat.add_argument("-s", "--system", help="system prompt (for every turn of a conversation too)")
    chat.add_argument("--no-thinking", action="store_true", help="do not show the model's thinking")
    chat.add_argument("--no-history", action="store_true", help="do not read or save the prompt history file")

    serve = sub.add_parser(
        "serve", help="run the OpenAI-compatible server (same flags as cursorpipe-server)", add_help=False
    )
    serve.add_argument("args", nargs=argparse.REMAINDER)
    return p


_TESTING_INSTALL = 'pip install "cursorpipe-testing @ git+https://github.com/cursorpipe/cursorpipe#subdirectory=packages/testing"'


@contextlib.contextmanager
def _emulator() -> Iterator[Any]:
    try:
        module = importlib.import_module("cursorpipe.testing.emulator")
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"--emulator needs the cursorpipe-testing distribution ({exc.name} is missing): "
            + _TESTING_INSTALL
        ) from exc
    with module.Emulator.start_in_thread() as emu:
        yield emu


@contextlib.contextmanager
def _config(args: argparse.Namespace) -> Iterator[CursorPipeConfig]:
    overrides: dict[str, Any] = {}
    if getattr(args, "strategy", None):
        overrides["strategy"] = args.strategy
    if getattr(args, "emulator", False):
        with _emulator() as emu:
            print(f"cursorpipe: EMULATED backend at {emu.url} (answers are fake)", file=sys.stderr)
            yield CursorPipeConfig(
                **overrides, strategy="connect", backend_url=emu.url, api_key=emu.api_key, auth_token=""
            )
        return
    yield CursorPipeConfig(**overrides)


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
async def _models(config: CursorPipeConfig, as_json: bool, out: TextIO) -> int:
    async with CursorClient(config) as client:
        models = await client.list_models()
    if as_json:
        data = [
            {
                "id": m.id,
                "display_name": m.display_name,
                "aliases": list(m.aliases),
                "context_window": m.context_window,
                "supports_thinking": m.supports_thinking,
            }
            for m in models
        ]
        print(json.dumps(data, indent=2), file=out)
        return 0
    width = max([len(m.id) for m in models] + [2])
    for m in models:
        extra = f"  (aliases: {', '.join(m.aliases)})" if m.aliases else ""
        print(f"{m.id:<{width}}  {m.display_name or ''}{extra}", file=out)
    return 0


# ----------------------------------------------------------------------------------------------
# chat
# ----------------------------------------------------------------------------------------------
def _chat(config: CursorPipeConfig, args: argparse.Namespace) -> int:
    printer = Printer(sys.stdout, sys.stderr, not args.no_thinking)
    return run_chat(
        config,
        prompt=" ".join(args.prompt).strip(),
        model=args.model,
        system=args.system,
        stdin=sys.stdin,
        printer=printer,
        history=not args.no_history,
    )


# ----------------------------------------------------------------------------------------------
# doctor
# ----------------------------------------------------------------------------------------------
class _Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed: list[str] = []

    def ok(self, what: str, detail: str) -> None:
        print(f"  ok    {what}: {detail}", file=self.out)

    def bad(self, what: str, detail: str, fix: str) -> None:
        self.failed.append(what)
        print(f"  FAIL  {what}: {redact(detail)}", file=self.out)
        print(f"        fix: {fix}", file=self.out)

    def info(self, what: str, detail: str) -> None:
        print(f"  --    {what}: {detail}", file=self.out)


async def _doctor(out: TextIO, timeout_s: float, config: CursorPipeConfig | None = None) -> int:
    """The checks; ``config`` is given for ``--emulator`` (else it is read from the environment)."""
    import httpx

    report = _Report(out)
    print(f"cursorpipe {__version__} doctor", file=out)
    try:
        config = config if config is not None else CursorPipeConfig()
    except ConfigurationError as exc:
        report.bad(
            "configuration", exc.message, "correct the CURSORPIPE_* variable named above (env or .env)"
        )
        return 1
    report.ok("configuration", f"strategy {config.strategy.value}, default model {config.default_model}")

    # 1. credentials (connect.md §2: api key -> access token -> the CLI's stored login)
    credential = None
    try:
        from .auth import discover_credential

        credential = discover_credential(config)
    except CursorPipeError as exc:
        report.bad("credentials", exc.message, "fix the credential source named above")
    if credential is not None:
        report.ok("credentials", f"{credential.kind.replace('_', ' ')} from {credential.source}")
    elif not report.failed:
        report.bad(
            "credentials",
            "none found (no CURSOR_API_KEY / CURSORPIPE_API_KEY, no access token, no Cursor CLI login)",
            "create an API key in the Cursor dashboard and set CURSOR_API_KEY=crsr_... (env or .env), "
            "or run `agent login` once",
        )

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        # 2. backend reachability: any HTTP answer means DNS, TLS and proxy work.
        reachable = False
        try:
            response = await http.get(config.backend_url + "/")
            reachable = True
            report.ok("backend", f"{config.backend_url} answers (HTTP {response.status_code})")
        except httpx.HTTPError as exc:
            report.bad(
                "backend",
                f"{config.backend_url} unreachable ({type(exc).__name__})",
                "check the network, HTTPS_PROXY/HTTP_PROXY and CURSOR_BACKEND_URL",
            )
        # 3. token validity: exchange the key / use the token, then list models with it.
        if credential is not None and reachable:
            try:
                from .auth import TokenProvider

                await TokenProvider(config, http, credential=credential).token()
                report.ok("token", "accepted by the backend")
            except CursorPipeError as exc:
                report.bad(
                    "token",
                    exc.message,
                    "create a new API key (Cursor dashboard > API keys) or `agent login`",
                )
        else:
            report.info("token", "not checked (needs credentials and a reachable backend)")

    # 4. the agent binary (for the acp and subprocess strategies)
    agent = (
        shutil.which(config.agent_bin)
        if os.sep not in config.agent_bin
        else (config.agent_bin if os.access(config.agent_bin, os.X_OK) else None)
    )
    if agent is None:
        needed = config.strategy in (Strategy.ACP, Strategy.SUBPROCESS)
        fix = (
            "install the Cursor CLI (curl https://cursor.com/install -fsS | bash) or point "
            "CURSORPIPE_AGENT_BIN at it"
        )
        if needed:
            report.bad("agent binary", f"{config.agent_bin!r} not found", fix)
        else:
            report.info(
                "agent binary", f"{config.agent_bin!r} not found (only needed for acp/subprocess; {fix})"
            )
    else:
        try:
            proc = await asyncio.to_thread(
                subprocess.run,
                [agent, "--version"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            version = (
                (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"
            )
            report.ok("agent binary", f"{agent} ({redact(version)})")
        except (OSError, subprocess.TimeoutExpired) as exc:
            report.bad(
                "agent binary",
                f"{agent} does not run ({type(exc).__name__})",
                "reinstall the Cursor CLI or fix CURSORPIPE_AGENT_BIN",
            )

    usable = credential is not None or agent is not None
    if report.failed or not usable:
        print(
            f"\n{len(report.failed)} problem(s): {', '.join(report.failed) or 'no usable transport'}",
            file=out,
        )
        return 1
    print("\nall good", file=out)
    return 0


async def _doctor_live(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``doctor --live``: the live-dialect checks, a table on ``out`` and the JSON report. Exit 1
    when a check fails under cursorpipe's default choice (the other choices are for comparison)."""
    from pathlib import Path

    from ._doctor_live import format_table, run_live_checks, write_report

    config = CursorPipeConfig()
    print(
        f"\ncursorpipe doctor --live: running short real turns against {redact(config.backend_url)} "
        "with your account (they count as requests); each is announced below",
        file=err,
        flush=True,
    )
    results = await run_live_checks(
        config, model=args.model, cache_model=args.cache_model, err=err, timeout_s=max(args.timeout, 60.0)
    )
    print("\nlive dialect checks (* = cursorpipe's default choice)", file=out)
    print(format_table(results), file=out)
    report = Path(args.report)
    write_report(report, results, config, args.model or config.default_model)
    print(f"\nreport written to {report} (no secrets; attach it to a bug report)", file=out)
    failed = [r for r in results if r.default and (not r.completed or r.honoured is False)]
    failed = [r for r in failed if not r.verdict.startswith("skipped")]
    if failed:
        print(f"{len(failed)} default choice(s) failed: {', '.join(r.check for r in failed)}", file=out)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cursorpipe`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        try:
            from .server.cli import main as serve_main
        except ImportError as exc:
            print(f"cursorpipe serve: {exc}", file=sys.stderr)
            return 2
        return serve_main(argv[1:], prog="cursorpipe serve")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor" and args.emulator:
            if args.live:
                print("cursorpipe doctor: --live talks to real Cursor; drop --emulator", file=sys.stderr)
                return 2
            with _config(args) as config:
                return asyncio.run(_doctor(sys.stdout, args.timeout, config))
        if args.command == "doctor":
            code = asyncio.run(_doctor(sys.stdout, args.timeout))
            if not args.live:
                return code
            if code != 0:
                print(
                    "\ncursorpipe doctor --live: fix the problems above first; no live turn was run",
                    file=sys.stderr,
                )
                return code
            return asyncio.run(_doctor_live(args, sys.stdout, sys.stderr))
        with _config(args) as config:
            if args.command == "models":
                return asyncio.run(_models(config, args.json, sys.stdout))
            return _chat(config, args)
    except CursorPipeError as exc:
        print(f"cursorpipe {args.command}: {redact(exc.message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
