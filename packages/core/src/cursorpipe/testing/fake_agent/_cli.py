"""Argument parsing, print mode (``-p``) and the small subcommands of the fake ``agent``.

Everything follows acp.md §3.3 (flags), §5 (error texts), §6 (print mode, ``models``, ``status``,
``about``). Where the docs are silent the behaviour is our guess and the spot says ``[G]``.
Standard library and relative imports only: the fake must start in milliseconds.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from . import catalog
from ._store import Chat, ChatStore

__all__ = ["Args", "UsageError", "parse_args", "run_cli", "subcommand"]

#: Subcommands (acp.md §3.3). ``acp`` is dispatched before parsing, by ``main``.
_COMMANDS = frozenset(
    {
        "acp",
        "models",
        "status",
        "whoami",
        "about",
        "create-chat",
        "login",
        "logout",
        "ls",
        "resume",
        "update",
        "mcp",
    }
)
#: Options taking a value (long name -> metavar used in Commander-style messages).
_VALUE_OPTIONS = {
    "--output-format": "format",
    "--model": "model",
    "--mode": "mode",
    "--workspace": "path",
    "--api-key": "key",
    "--auth-token": "token",
    "--endpoint": "url",
    "--sandbox": "mode",
    "--add-dir": "path",
    "--header": "header",
    "--format": "format",
}
_SHORT = {"-p": "--print", "-m": "--model", "-f": "--force", "-h": "--help", "-v": "--version",
          "-e": "--endpoint", "-k": "--insecure", "-H": "--header"}  # fmt: skip
_FLAGS = frozenset(
    {
        "--print",
        "--stream-partial-output",
        "--force",
        "--yolo",
        "--trust",
        "--plan",
        "--continue",
        "--approve-mcps",
        "--insecure",
        "--help",
        "--version",
        "--list-models",
    }
)
_CHOICES = {
    "--output-format": ("text", "json", "stream-json"),
    "--mode": ("plan", "ask"),  # acp.md §1.5/§3.3: 'agent' is rejected by the flag
    "--format": ("text", "json"),
    "--sandbox": ("enabled", "disabled"),
}


class UsageError(Exception):
    """A Commander-style command-line error (``error: …``, exit 1)."""


@dataclass
class Args:
    """The parsed command line."""

    command: str | None = None
    command_args: list[str] = field(default_factory=list)
    print_mode: bool = False
    output_format: str | None = None
    partial: bool = False
    model: str | None = None
    mode: str | None = None
    force: bool = False
    trust: bool = False
    workspace: str | None = None
    resume: str | None = None
    continue_chat: bool = False
    api_key: str | None = None
    auth_token: str | None = None
    format: str | None = None
    help: bool = False
    version: bool = False
    list_models: bool = False
    prompt_words: list[str] = field(default_factory=list)
    used_double_dash: bool = False


def parse_args(argv: Sequence[str]) -> Args:
    """Parse like Commander.js: options anywhere before ``--``, ``--opt=value`` allowed, and a
    positional starting with ``-`` taken as an (unknown) option (acp.md §3.3)."""
    args = Args()
    positionals: list[str] = []
    before_dash = -1
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args.used_double_dash = True
            before_dash = len(positionals)
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        name = _SHORT.get(name, name)
        if name == "--resume":
            # Commander's optional value `[chatId]`: the next word is taken unless it looks like an
            # option (acp.md §3.3 lists `--resume [chatId]`).
            if eq:
                args.resume = inline
            elif i < len(argv) and not argv[i].startswith("-"):
                args.resume = argv[i]
                i += 1
            else:
                args.resume = ""
            continue
        if name in _FLAGS:
            if eq:
                raise UsageError(f"error: option '{name}' does not take an argument")
            _set_flag(args, name)
            continue
        if name in _VALUE_OPTIONS:
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise UsageError(f"error: option '{name} <{_VALUE_OPTIONS[name]}>' argument missing")
            choices = _CHOICES.get(name)
            if choices is not None and value not in choices:
                raise UsageError(
                    f"error: option '{name} <{_VALUE_OPTIONS[name]}>' argument '{value}' is invalid. "
                    f"Allowed choices are {', '.join(choices)}."
                )
            _set_value(args, name, value)
            continue
        raise UsageError(f"error: unknown option '{arg}'")
    # A subcommand is the first positional, and only when it came before `--`.
    if positionals and before_dash != 0 and positionals[0] in _COMMANDS:
        args.command = positionals[0]
        args.command_args = positionals[1:]
    else:
        args.prompt_words = positionals
    return args


def subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand of ``argv`` (global flags may precede it, acp.md §2), or None."""
    try:
        return parse_args(argv).command
    except UsageError:
        return None


def _set_flag(args: Args, name: str) -> None:
    if name == "--print":
        args.print_mode = True
    elif name == "--stream-partial-output":
        args.partial = True
    elif name in ("--force", "--yolo"):
        args.force = True
    elif name == "--trust":
        args.trust = True
    elif name == "--plan":
        args.mode = "plan"
    elif name == "--continue":
        args.continue_chat = True
    elif name == "--help":
        args.help = True
    elif name == "--version":
        args.version = True
    elif name == "--list-models":
        args.list_models = True
    # --approve-mcps, --insecure: accepted, no effect on the fake.


def _set_value(args: Args, name: str, value: str) -> None:
    if name == "--output-format":
        args.output_format = value
    elif name == "--model":
        args.model = value
    elif name == "--mode":
        args.mode = value
    elif name == "--workspace":
        args.workspace = value
    elif name == "--api-key":
        args.api_key = value
    elif name == "--auth-token":
        args.auth_token = value
    elif name == "--format":
        args.format = value
    # --endpoint, --sandbox, --add-dir, --header: accepted, no effect on the fake.


_HELP = """Usage: agent [options] [command] [prompt...]

Fake Cursor CLI agent (cursorpipe.testing.fake_agent) for offline tests.

Options:
  -v, --version                  output the version number
  -p, --print                    print responses to the console (non-interactive)
  --output-format <format>       text | json | stream-json (only with --print)
  --stream-partial-output        stream text deltas (with --print and stream-json)
  -m, --model <model>            model to use
  --mode <mode>                  plan | ask
  -f, --force                    allow commands unless explicitly denied
  --trust                        trust the workspace without prompting
  --resume [chatId]              resume a chat
  --api-key <key>                API key (prefer CURSOR_API_KEY)
  --list-models                  list available models and exit
  -h, --help                     display help for command

Commands:
  acp | models | status | about | create-chat
"""


# ----------------------------------------------------------------------------------------------
# Output helpers
# ----------------------------------------------------------------------------------------------
class _Out:
    """stdout/stderr writers that flush every line (a real CLI's stream-json is line-buffered)."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def event(self, obj: Mapping[str, Any]) -> None:
        self.line(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()


def _hang() -> NoReturn:
    """Never finish (acp.md §6.6: `-p` sometimes does not exit)."""
    while True:
        time.sleep(3600)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------------------------
# Entry point for everything except `acp`
# ----------------------------------------------------------------------------------------------
def run_cli(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the fake CLI for ``argv`` (without the program name); returns the exit code."""
    env = os.environ if env is None else env
    out = _Out(stdout or sys.stdout, stderr or sys.stderr)
    stdin = stdin or sys.stdin
    try:
        args = parse_args(argv)
    except UsageError as exc:
        out.err(str(exc))
        return 1
    knobs = catalog.Knobs.from_env(env)
    if args.help:
        out.line(_HELP.rstrip("\n"))
        return 0
    if args.version:
        out.line(catalog.CLI_VERSION)
        return 0
    if args.list_models or args.command == "models":
        return _models(out, env, args, knobs)
    if args.command in ("status", "whoami"):
        return _status(out, env, args, knobs)
    if args.command == "about":
        return _about(out, env, args, knobs)
    if args.command == "create-chat":
        # acp.md §3.3/§6.4: prints a new chat UUID. Whether it needs credentials is not documented
        # [G]; the fake mints ids offline.
        chat = ChatStore.from_env(env, knobs.state_dir).create(args.model or "")
        out.line(chat.id)
        return 0
    if args.command is not None:
        out.err(f"fake agent: the '{args.command}' command is not simulated")
        return 1
    interactive_stdout = _isatty(out.stdout)
    if not args.print_mode and interactive_stdout:
        out.err("fake agent: the interactive TUI is not simulated; use --print")
        return 1
    # acp.md §3.3: print mode is inferred when stdout is not a terminal.
    return _print_mode(out, env, args, knobs, stdin)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# Credentials
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Auth:
    ok: bool
    source: str  # acp.md §6.2 apiKeySource: env | flag | login
    key: str
    invalid_key: bool = False


def _auth(env: Mapping[str, str], args: Args, knobs: catalog.Knobs) -> _Auth:
    flag_key = args.api_key or ""
    env_key = env.get("CURSOR_API_KEY", "")
    token = args.auth_token or env.get("CURSOR_AUTH_TOKEN", "")
    key = flag_key or env_key
    if key and knobs.expect_api_key and key != knobs.expect_api_key:
        return _Auth(False, "flag" if flag_key else "env", key, invalid_key=True)
    if key:
        return _Auth(True, "flag" if flag_key else "env", key)
    if token:
        return _Auth(True, "flag" if args.auth_token else "env", "")
    if knobs.account is catalog.AccountState.LOGGED_OUT:
        return _Auth(False, "login", "")
    return _Auth(True, "login", "")


def _auth_failure(out: _Out, auth: _Auth) -> int:
    if auth.invalid_key:
        out.err(catalog.INVALID_API_KEY_TEXT)
    out.err(catalog.AUTH_REQUIRED_TEXT)
    return 1


# ----------------------------------------------------------------------------------------------
# models / status / about (acp.md §6.5)
# ----------------------------------------------------------------------------------------------
def _models(out: _Out, env: Mapping[str, str], args: Args, knobs: catalog.Knobs) -> int:
    auth = _auth(env, args, knobs)
    if not auth.ok:
        # acp.md §6.5: prints the auth error; §1.5 (PROBE §6.3): several subcommands exit 0 even
        # when refusing, so the fake does too and callers must read the text [S].
        if auth.invalid_key:
            out.line(catalog.INVALID_API_KEY_TEXT)
        out.line(catalog.AUTH_REQUIRED_TEXT)
        return 0
    bold, reset = ("\x1b[1m", "\x1b[0m") if knobs.ansi else ("", "")
    dim = "\x1b[2m" if knobs.ansi else ""
    out.line(f"{bold}{catalog.MODELS_HEADER}{reset}")
    out.line("")
    default = "composer-2"  # [G] which model the CLI marks (default) is account-specific
    for model in catalog.MODELS:
        if not model.routable:
            continue
        marker = ""
        if model.cli_id == catalog.DEFAULT_CLI_MODEL:
            marker = f" {dim}(current){reset}"
        elif model.cli_id == default:
            marker = f" {dim}(default){reset}"
        out.line(f"{model.cli_id} - {model.label}{marker}")
    out.line("")
    out.line(f"{dim}{catalog.MODELS_TIP}{reset}")
    return 0


def _logged_in(knobs: catalog.Knobs) -> bool:
    # acp.md §6.5: status reports the stored login only; CURSOR_API_KEY does not flip it.
    return knobs.account is not catalog.AccountState.LOGGED_OUT


def _status(out: _Out, env: Mapping[str, str], args: Args, knobs: catalog.Knobs) -> int:
    if _logged_in(knobs):
        data: dict[str, Any] = {
            "status": "authenticated",
            "isAuthenticated": True,
            "hasAccessToken": True,
            "hasRefreshToken": True,
            "message": f"Logged in as {catalog.USER_EMAIL}",
            "userInfo": {
                "email": catalog.USER_EMAIL,
                "userId": 4242,
                "createdAt": "2025-01-01T00:00:00.000Z",
            },
        }
    else:
        data = {
            "status": "unauthenticated",
            "isAuthenticated": False,
            "hasAccessToken": False,
            "hasRefreshToken": False,
            "message": "Not logged in",
        }
    if args.format == "json":
        out.event(data)
    else:
        out.line(("✓ " if data["isAuthenticated"] else "") + str(data["message"]))
    # acp.md §1.5: exit 0 either way (use isAuthenticated, not the exit code).
    return 0


def _about(out: _Out, env: Mapping[str, str], args: Args, knobs: catalog.Knobs) -> int:
    logged_in = _logged_in(knobs)
    data = {
        "cliVersion": catalog.CLI_VERSION,
        "model": _find_label(catalog.DEFAULT_CLI_MODEL),
        "subscriptionTier": "Pro" if logged_in else "Unknown",
        "osPlatform": sys.platform,
        "osArch": platform.machine() or "unknown",
        "terminal": "unknown",
        "shell": os.path.basename(env.get("SHELL", "sh")),
        "userEmail": catalog.USER_EMAIL if logged_in else "Not logged in",
    }
    if args.format == "json":
        out.event(data)
    else:
        for key, value in data.items():
            out.line(f"{key:<18}{value}")
    return 0


def _find_label(cli_id: str) -> str:
    model = catalog.find_model(cli_id)
    return model.label if model else cli_id


# ----------------------------------------------------------------------------------------------
# Print mode (acp.md §6)
# ----------------------------------------------------------------------------------------------
def _resolve_model(name: str) -> catalog.FakeModel | None:
    """A routable model for a CLI id; bracket overrides of a listed id are accepted (acp.md §3.3).
    ACP ids are not CLI ids (acp.md §3.2), so they are rejected here."""
    for model in catalog.MODELS:
        if model.routable and model.cli_id == name:
            return model
    if "[" in name:
        base = name.split("[", 1)[0]
        for model in catalog.MODELS:
            if model.routable and model.cli_id.split("[", 1)[0] == base:
                return model
    return None


def _read_prompt(args: Args, stdin: TextIO) -> tuple[str, str]:
    """(prompt, source). acp.md §3.3: stdin is read when no positional prompt is given and is
    ignored next to one [S: freema#26, kprompt#146]."""
    if args.prompt_words:
        return " ".join(args.prompt_words), "argv"
    if _isatty(stdin):
        return "", "none"
    try:
        data = stdin.read()
    except (OSError, ValueError):
        data = ""
    return data, "stdin"


def _record(knobs: catalog.Knobs, entry: Mapping[str, Any]) -> None:
    if not knobs.record:
        return
    with open(knobs.record, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _print_mode(out: _Out, env: Mapping[str, str], args: Args, knobs: catalog.Knobs, stdin: TextIO) -> int:
    fmt = args.output_format or "text"  # acp.md §3.3: default `text` now
    prompt, source = _read_prompt(args, stdin)
    store = ChatStore.from_env(env, knobs.state_dir)
    auth = _auth(env, args, knobs)
    _record(
        knobs,
        {
            "kind": "print",
            "pid": os.getpid(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "prompt_source": source,
            "prompt_chars": len(prompt),
            "prompt_head": prompt[:200],
            "model": args.model,
            "mode": args.mode,
            "resume": args.resume,
            "output_format": fmt,
            "partial": args.partial,
            "trust": args.trust,
            "force": args.force,
            "workspace": args.workspace,
            "api_key_source": auth.source,
            "env_has_api_key": bool(env.get("CURSOR_API_KEY")),
        },
    )
    if not auth.ok:
        return _auth_failure(out, auth)
    if knobs.network_error:
        out.err(catalog.NETWORK_ERROR_TEXT)
        return 1
    model_name = args.model or catalog.DEFAULT_CLI_MODEL
    model = _resolve_model(model_name)
    if model is None:
        out.err(catalog.unknown_model_text(model_name))  # acp.md §3.3: exit 1
        return 1
    if not prompt.strip():
        out.err("Error: No prompt provided. Pass a prompt argument or pipe it on stdin.")  # [G]
        return 1
    if args.workspace is not None and not os.path.isdir(args.workspace):
        out.err(f"Error: Workspace path does not exist: {args.workspace}")  # [G]
        return 1
    if args.resume is not None or args.continue_chat:
        chat_id = args.resume or _latest_chat(store)
        if not chat_id or not store.exists(chat_id):
            # [G] acp.md does not say what print mode does with an unknown chat id.
            out.err(f"Error: Chat not found: {chat_id or '(none)'}")
            return 1
    else:
        chat_id = store.create(model.cli_id).id
    with store.locked(chat_id) as chat:
        if chat is None:
            out.err(f"Error: Chat not found: {chat_id}")
            return 1
        return _turn(out, args, knobs, store, chat, model, prompt, fmt, auth)


def _latest_chat(store: ChatStore) -> str:
    try:
        files = sorted(store.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return ""
    return files[-1].stem if files else ""


def _turn(
    out: _Out,
    args: Args,
    knobs: catalog.Knobs,
    store: ChatStore,
    chat: Chat,
    model: catalog.FakeModel,
    prompt: str,
    fmt: str,
    auth: _Auth,
) -> int:
    started = time.monotonic()
    sid = chat.id
    history = list(chat.prompts)
    stream = fmt == "stream-json"
    if stream:
        _stream_opening(out, sid, auth, model, prompt)
    # Request-time failures come after init (the request reaches the backend first) [G].
    if knobs.account is catalog.AccountState.USAGE_LIMIT:
        out.err(catalog.usage_limit_text())  # acp.md §5
        return 1
    if knobs.account is catalog.AccountState.RATE_LIMITED:
        out.err(catalog.RATE_LIMIT_TEXT)
        return 1
    if knobs.first_delay_s:
        time.sleep(knobs.first_delay_s)

    text, segments = _reply_segments(knobs, model, prompt, history)
    if stream and model.thinking:
        _stream_thinking(out, sid, prompt)
    _emit_segments(out, args, knobs, auth, sid, segments, stream)

    # Persist before the result line: a caller may kill the process as soon as it reads it.
    chat.prompts.append(prompt)
    chat.replies.append(text)
    if not chat.model:
        chat.model = model.cli_id
    store.save(chat)

    if fmt == "text":
        out.line(text)
    else:
        out.event(_result_event(knobs, sid, prompt, text, history, started))
    if knobs.no_exit:
        _hang()  # acp.md §6.6: `-p` sometimes never exits after finishing
    return 0


def _stream_opening(out: _Out, sid: str, auth: _Auth, model: catalog.FakeModel, prompt: str) -> None:
    """The ``system/init`` and echoed ``user`` events that open a stream-json turn."""
    out.event(
        {
            "type": "system",
            "subtype": "init",
            "apiKeySource": auth.source,
            "cwd": os.getcwd(),
            "session_id": sid,
            "model": model.label,
            "permissionMode": "default",
        }
    )
    out.event(
        {
            "type": "user",
            "message": {"role": "user", "content": [{"type": "text", "text": prompt}]},
            "session_id": sid,
        }
    )


def _reply_segments(
    knobs: catalog.Knobs, model: catalog.FakeModel, prompt: str, history: list[str]
) -> tuple[str, list[list[str]]]:
    """The full reply text (with any in-band error) and its chunks, cut in two message segments
    when a tool call is scripted between them."""
    reply = catalog.expected_reply(prompt, history)
    inband = knobs.inband_error_text(model.cli_id)
    text = reply + (f"\n\n{inband}" if inband else "")
    chunks = catalog.reply_chunks(reply)
    if inband:
        chunks += ["\n\n", *catalog.reply_chunks(inband)]
    # Optional tool call between two message segments (acp.md §6.2), to exercise segmenting.
    split = len(chunks) // 2 if knobs.tool_call and len(chunks) > 1 else len(chunks)
    segments = [chunks[:split], chunks[split:]] if split < len(chunks) else [chunks]
    return text, segments


def _stream_thinking(out: _Out, sid: str, prompt: str) -> None:
    # acp.md §6.2: docs say thinking is suppressed in print mode, wrappers observe it [C vs docs].
    for piece in catalog.reply_chunks(catalog.expected_thinking(prompt)):
        out.event(
            {
                "type": "thinking",
                "subtype": "delta",
                "text": piece,
                "session_id": sid,
                "timestamp_ms": _now_ms(),
            }
        )
    out.event({"type": "thinking", "subtype": "completed", "session_id": sid, "timestamp_ms": _now_ms()})


def _emit_segments(
    out: _Out,
    args: Args,
    knobs: catalog.Knobs,
    auth: _Auth,
    sid: str,
    segments: list[list[str]],
    stream: bool,
) -> None:
    """Stream the reply segments (a tool call between two), honouring the hang/crash/latency knobs."""
    emitted = 0
    model_call_id = f"mc_{uuid.uuid4().hex[:12]}"
    for index, segment in enumerate(segments):
        if index > 0:
            _tool_call(out, sid, model_call_id)
        for piece in segment:
            _misbehave_after(out, auth, knobs, emitted)
            if knobs.latency_s:
                time.sleep(knobs.latency_s)
            if stream and args.partial:
                event = _assistant(piece, sid)
                event["timestamp_ms"] = _now_ms()
                out.event(event)
                if emitted % 5 == 2:
                    # acp.md §6.3: a delta is sometimes repeated with `model_call_id` [C].
                    dup = dict(event, model_call_id=model_call_id)
                    out.event(dup)
            emitted += 1
        if stream:
            # acp.md §6.3: without partial output one complete message per segment; with it the
            # deltas are followed by the cumulative message without `timestamp_ms`.
            out.event(_assistant("".join(segment), sid))
    _misbehave_after(out, auth, knobs, emitted)


def _misbehave_after(out: _Out, auth: _Auth, knobs: catalog.Knobs, emitted: int) -> None:
    """Hang or crash once ``emitted`` chunks reach the ``hang_after`` / ``crash_after`` knob."""
    if knobs.hang_after is not None and emitted >= knobs.hang_after:
        _hang()
    if knobs.crash_after is not None and emitted >= knobs.crash_after:
        _crash(out, auth, knobs)


def _result_event(
    knobs: catalog.Knobs, sid: str, prompt: str, text: str, history: list[str], started: float
) -> dict[str, Any]:
    duration = int((time.monotonic() - started) * 1000)
    result: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": duration,
        "duration_api_ms": duration,
        "result": text,
        "session_id": sid,
        "request_id": str(uuid.uuid4()),
    }
    usage = catalog.usage_for(prompt, text, history)
    if knobs.usage_shape == "nested":
        result["usage"] = usage  # acp.md §6.3: recent builds, camelCase
    elif knobs.usage_shape == "top":
        result.update(usage)  # acp.md §6.3: one source saw top-level keys [S]
    # "none": older builds had no usage at all.
    return result


def _assistant(text: str, sid: str) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "session_id": sid,
    }


def _tool_call(out: _Out, sid: str, model_call_id: str) -> None:
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    args = {"path": "README.md"}
    out.event(
        {
            "type": "tool_call",
            "subtype": "started",
            "call_id": call_id,
            "tool_call": {"readToolCall": {"args": args}},
            "model_call_id": model_call_id,
            "session_id": sid,
            "timestamp_ms": _now_ms(),
        }
    )
    out.event(
        {
            "type": "tool_call",
            "subtype": "completed",
            "call_id": call_id,
            "tool_call": {"readToolCall": {"args": args, "result": {"success": {"content": "# fake"}}}},
            "model_call_id": model_call_id,
            "session_id": sid,
            "timestamp_ms": _now_ms(),
        }
    )


def _crash(out: _Out, auth: _Auth, knobs: catalog.Knobs) -> NoReturn:
    # A crash dump that (like real ones can) contains the credential, so callers' redaction of
    # stderr tails is tested.
    out.err("FATAL: fake agent crashed (simulated by FAKE_AGENT_CRASH_AFTER)")
    if auth.key:
        out.err(f"  at request with CURSOR_API_KEY={auth.key}")
    out.stdout.flush()
    os._exit(knobs.crash_code)
