"""``cursorpipe doctor --live``: the checks of docs/live-dialect.md ("Live checks") against the live service.

Each check is one short turn (three for the stateless-memory check, two for the session and cache
checks) per wire variant, through the connect transport with an explicit
:class:`~cursorpipe.transports.connect._turn.WireProfile` so the automatic dialect switch never
hides what the service did. Every turn is announced on stderr before it runs; nothing runs unless
the user passed ``--live``. The result is a table (what worked under which choice) and a JSON report
without secrets, for a bug report. Pointing ``CURSORPIPE_BACKEND_URL`` at the emulator runs the same
checks offline (the tests do).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from ._redact import redact
from .client import CursorClient
from .config import CursorPipeConfig, Strategy
from .errors import CursorPipeError
from .types import ToolCall, ToolSpec, Usage

__all__ = ["LiveResult", "Variant", "format_table", "run_live_checks", "write_report"]

#: Longest reply excerpt kept in the report (a bug report needs the gist, not the whole answer).
_EXCERPT = 240


@dataclass(frozen=True)
class Variant:
    """One wire choice a check is run under: ``wire`` are :class:`WireProfile` fields, ``transport``
    extra :class:`ConnectTransport` arguments; ``default`` marks what cursorpipe uses by default."""

    name: str
    wire: dict[str, Any] = field(default_factory=dict)
    transport: dict[str, Any] = field(default_factory=dict)
    default: bool = False


@dataclass
class LiveResult:
    """What one check did under one variant.

    ``completed``: every turn of the check finished; ``honoured``: the effect the check looks for
    was seen (``None`` when the check only reports numbers); ``verdict``: one line for the table."""

    check: str
    variant: str
    default: bool
    wire: dict[str, Any]
    completed: bool = False
    honoured: bool | None = None
    verdict: str = ""
    error: str | None = None
    reply: str = ""
    usage: dict[str, int] | None = None
    seconds: float = 0.0
    turns: int = 0


def _usage_dict(u: Usage | None) -> dict[str, int] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
    }


class _Probe:
    """Runs the checks; one fresh transport per variant (no dialect memory, no shared state)."""

    def __init__(
        self, config: CursorPipeConfig, model: str, cache_model: str | None, err: TextIO, timeout_s: float
    ) -> None:
        self.config = config
        self.model = model
        self.cache_model = cache_model
        self.err = err
        self.timeout_s = timeout_s
        self.code = f"zebra{secrets.token_hex(3)}"  # a word no model says by chance
        self.results: list[LiveResult] = []

    def announce(self, check: str, variant: Variant, turns: int) -> None:
        what = "one short turn" if turns == 1 else f"{turns} short turns"
        print(
            f"cursorpipe doctor --live: {check} / {variant.name}: {what} "
            f"against {redact(self.config.backend_url)}",
            file=self.err,
            flush=True,
        )

    def client(self, variant: Variant) -> CursorClient:
        from .transports.connect import ConnectTransport
        from .transports.connect._turn import WireProfile

        transport = ConnectTransport(self.config, wire=WireProfile(**variant.wire), **variant.transport)
        return CursorClient(self.config, transport=transport)

    async def run(
        self,
        check: str,
        variant: Variant,
        turns: int,
        body: Callable[[CursorClient, LiveResult], Awaitable[None]],
    ) -> LiveResult:
        self.announce(check, variant, turns)
        res = LiveResult(check, variant.name, variant.default, dict(variant.wire) | dict(variant.transport))
        started = time.monotonic()
        try:
            async with self.client(variant) as client:
                await body(client, res)
            res.completed = True
        except CursorPipeError as exc:
            res.error = redact(f"{type(exc).__name__}: {exc.message}")
        except Exception as exc:  # a probe reports every failure; CancelledError still propagates
            res.error = redact(f"{type(exc).__name__}: {exc}")
        res.seconds = round(time.monotonic() - started, 2)
        res.reply = redact(res.reply[:_EXCERPT])
        if res.error is not None:
            res.verdict = f"refused: {res.error[:100]}"
        elif not res.verdict:
            res.verdict = "works" if res.honoured in (True, None) else "completes, effect lost"
        self.results.append(res)
        return res

    # -- the six checks (docs/live-dialect.md, "Live checks") --------------------------------
    async def plain_chat(self) -> None:
        async def body(client: CursorClient, res: LiveResult) -> None:
            out = await client.complete(
                self.model, prompt="Reply with the single word: pong", timeout_s=self.timeout_s
            )
            res.turns, res.reply, res.usage = 1, out.text, _usage_dict(out.usage)
            res.honoured = bool(out.text.strip())

        for v in (
            Variant("cli identity", {"dialect": "cli"}, default=True),
            Variant("sdk identity", {"dialect": "sdk", "system_prompt": "rules"}),
        ):
            await self.run("1 plain chat", v, 1, body)

    async def system_prompt(self) -> None:
        system = f"Whatever the user says, answer with exactly the word {self.code} and nothing else."

        async def body(client: CursorClient, res: LiveResult) -> None:
            out = await client.complete(
                self.model, prompt="Say hello.", system=system, timeout_s=self.timeout_s
            )
            res.turns, res.reply, res.usage = 1, out.text, _usage_dict(out.usage)
            res.honoured = self.code in out.text
            if not res.honoured:
                res.verdict = "completes, system prompt ignored"

        for v in (
            Variant(
                "rule + cloud_rule + system message (cli)",
                {"dialect": "cli", "system_prompt": "rules"},
                default=True,
            ),
            Variant("custom_system_prompt (cli)", {"dialect": "cli", "system_prompt": "custom"}),
            Variant("custom_system_prompt (sdk)", {"dialect": "sdk", "system_prompt": "custom"}),
        ):
            await self.run("2 system prompt", v, 1, body)

    async def stateless_memory(self) -> None:
        async def body(client: CursorClient, res: LiveResult) -> None:
            messages: list[dict[str, Any]] = [
                {
                    "role": "user",
                    "content": f"My first message contains the codeword {self.code}. Reply with OK.",
                }
            ]
            for follow_up in ("Reply with OK again.", "What was my first message? Quote it exactly."):
                out = await client.complete(self.model, messages, timeout_s=self.timeout_s)
                res.turns += 1
                messages += [
                    {"role": "assistant", "content": out.text},
                    {"role": "user", "content": follow_up},
                ]
            out = await client.complete(self.model, messages, timeout_s=self.timeout_s)
            res.turns += 1
            res.reply, res.usage = out.text, _usage_dict(out.usage)
            res.honoured = self.code in out.text
            if not res.honoured:
                res.verdict = "completes, earlier turns lost"

        for v in (
            Variant("history in root_prompt_messages_json", {"history": "roots"}, default=True),
            Variant("history in conversation_history", {"history": "conversation_history"}),
        ):
            await self.run("3 stateless memory", v, 3, body)

    async def tool(self) -> None:
        spec = ToolSpec(
            "get_secret_number",
            "Returns the secret number for the integer n.",
            {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        )

        async def body(client: CursorClient, res: LiveResult) -> None:
            seen: list[Any] = []

            async def handler(call: ToolCall) -> str:
                seen.append(json.loads(call.arguments or "{}").get("n"))
                return "4217"

            out = await client.complete(
                self.model,
                prompt="Call the tool get_secret_number with n=3 and tell me the number it returns.",
                tools=[spec],
                tool_handler=handler,
                timeout_s=self.timeout_s,
            )
            res.turns, res.reply, res.usage = 1, out.text, _usage_dict(out.usage)
            called = bool(seen)
            integer = bool(seen) and type(seen[0]) is int and seen[0] == 3
            res.honoured = called and integer and "4217" in out.text
            if not called:
                res.verdict = "completes, tool never called"
            elif not integer:
                res.verdict = f"tool called with n={seen[0]!r} (not the integer 3)"
            elif "4217" not in out.text:
                res.verdict = "tool called, result not used"

        for v in (
            Variant("MCP family + tools in request context", {}, default=True),
            Variant("allowed-tools header empty", {"mcp_allowed_tools": False}),
            Variant("tools only in mcp_tools", {"tools_in_request_context": False}),
            # live-dialect.md row 8: ASK is reported to take no tool definitions; this variant
            # shows whether the service still hides the tools there (it should: "tool never called").
            Variant("ASK mode with tools", {"mode": "ask"}),
        ):
            await self.run("4 tool call", v, 1, body)

    async def session(self) -> None:
        async def body(client: CursorClient, res: LiveResult) -> None:
            async with client.session(self.model) as session:
                await session.prompt(
                    f"Remember the word {self.code}. Reply with OK.", timeout_s=self.timeout_s
                )
                res.turns += 1
                out = await session.prompt("Which word did I ask you to remember?", timeout_s=self.timeout_s)
                res.turns += 1
            res.reply, res.usage = out.text, _usage_dict(out.usage)
            res.honoured = self.code in out.text
            if not res.honoured:
                res.verdict = "completes, first turn lost"

        for v in (
            Variant("read to the end-stream after turn_ended", {}, default=True),
            Variant("drop the stream at turn_ended", {}, {"post_turn_guard_s": 0.0}),
        ):
            await self.run("5 session second turn", v, 2, body)

    async def cache_usage(self) -> None:
        if not self.cache_model:
            self.results.append(
                LiveResult("6 cached usage", "skipped", False, {}, verdict="skipped: no Claude model found")
            )
            return
        # A long, identical prefix twice: the second turn should read it from the prompt cache.
        system = "Reference text, ignore it. " + " ".join(f"item{i}" for i in range(1500))

        async def body(client: CursorClient, res: LiveResult) -> None:
            outs = []
            for _ in range(2):
                outs.append(
                    await client.complete(
                        self.cache_model, prompt="Reply with OK.", system=system, timeout_s=self.timeout_s
                    )
                )
                res.turns += 1
            usage = outs[-1].usage
            res.reply, res.usage = outs[-1].text, _usage_dict(usage)
            cached = usage.cache_read_tokens + usage.cache_write_tokens
            if cached == 0:
                res.verdict = "no cache activity reported: inconclusive"
            elif usage.input_tokens >= cached:
                res.honoured = True
                res.verdict = (
                    f"input_tokens {usage.input_tokens} includes cache {cached} (row 13: report it once)"
                )
            else:
                res.honoured = False
                res.verdict = f"input_tokens {usage.input_tokens} excludes cache {cached} (add them)"

        await self.run("6 cached usage", Variant(f"{self.cache_model}, twice", {}, default=True), 2, body)


async def _cache_model(config: CursorPipeConfig, err: TextIO) -> str | None:
    try:
        async with CursorClient(config) as client:
            models = await client.list_models()
    except CursorPipeError as exc:
        print(f"cursorpipe doctor --live: model list failed ({redact(exc.message)})", file=err)
        return None
    for m in models:
        if any(k in m.id.lower() for k in ("claude", "sonnet", "opus")):
            return m.id
    return None


async def run_live_checks(
    config: CursorPipeConfig,
    *,
    model: str | None = None,
    cache_model: str | None = None,
    err: TextIO,
    timeout_s: float = 60.0,
) -> list[LiveResult]:
    """Run the six live checks under each variant; every turn is announced on ``err`` first."""
    # No client retries: each variant is the stated number of turns, and a refusal shows at once.
    config = config.model_copy(update={"strategy": Strategy.CONNECT, "max_retries": 0})
    chosen = model or config.default_model
    if cache_model is None:
        cache_model = await _cache_model(config, err)
    probe = _Probe(config, chosen, cache_model, err, timeout_s)
    for check in (probe.plain_chat, probe.system_prompt, probe.stateless_memory, probe.tool, probe.session):
        await check()
    await probe.cache_usage()
    return probe.results


def format_table(results: Sequence[LiveResult]) -> str:
    """The results as a fixed-width table (``*`` marks cursorpipe's default choice)."""
    rows = [("check", "variant", "result", "s")]
    for r in results:
        rows.append((r.check, ("* " if r.default else "  ") + r.variant, r.verdict, f"{r.seconds:g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        if i == 0:
            lines.append("-" * (sum(widths) + 10))
    return "\n".join(lines)


def write_report(path: Path, results: Sequence[LiveResult], config: CursorPipeConfig, model: str) -> None:
    """The JSON report a user can attach to a bug report: versions, backend, model, every result;
    no credentials (every free-text field went through :func:`redact`)."""
    doc = {
        "cursorpipe": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "backend_url": redact(config.backend_url),
        "connect_dialect": config.connect_dialect,
        "client_version": config.client_version,
        "model": model,
        "results": [asdict(r) for r in results],
    }
    text = redact(json.dumps(doc, indent=2, ensure_ascii=False))
    path.write_text(text + "\n", encoding="utf-8")
