"""The fake agent's world: models, account states, error texts, replies, thinking and usage.

Shared by every mode of the fake ``agent`` (print mode, ``models``, ``status`` and ``acp``) so the
modes agree with each other, and public so tests compute expected values instead of hard-coding
them. Everything here is deterministic.

Model ids follow acp.md §3.2: the CLI id space (``agent models``, ``--model``) differs from the
ACP id space, which is bracket-parameterised (``default[]``, ``gpt-5[reasoning=medium,fast=false]``)
in the default "variants" picker, or bare (``default``, ``gpt-5``) when the client sets
``clientCapabilities._meta.parameterizedModelPicker`` at ``initialize``.

The API is stable: later changes are additive only.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACP_DEFAULT_MODEL_ID",
    "AUTH_REQUIRED_ACP_MESSAGE",
    "AUTH_REQUIRED_TEXT",
    "CLI_VERSION",
    "DEFAULT_CLI_MODEL",
    "ENV_ACCOUNT",
    "ENV_ANSI",
    "ENV_CRASH_AFTER",
    "ENV_CRASH_CODE",
    "ENV_EXPECT_API_KEY",
    "ENV_FIRST_DELAY",
    "ENV_HANG_AFTER",
    "ENV_INBAND_ERROR",
    "ENV_LATENCY",
    "ENV_NETWORK_ERROR",
    "ENV_NO_EXIT",
    "ENV_RECORD",
    "ENV_STATE_DIR",
    "ENV_TOOL_CALL",
    "ENV_USAGE_SHAPE",
    "INBAND_ERRORS",
    "INVALID_API_KEY_TEXT",
    "MODELS",
    "MODELS_HEADER",
    "MODELS_TIP",
    "NETWORK_ERROR_TEXT",
    "RATE_LIMIT_TEXT",
    "USER_EMAIL",
    "AccountState",
    "FakeModel",
    "Knobs",
    "acp_model_ids",
    "expected_reply",
    "expected_thinking",
    "find_model",
    "reply_chunks",
    "unknown_model_text",
    "usage_for",
    "usage_limit_text",
]

#: What ``agent --version`` prints (a build of the shape acp.md quotes, marked as the fake's).
CLI_VERSION = "2026.08.11-fake0000"
#: The email ``status``/``about`` report for a logged-in fake account.
USER_EMAIL = "fake.user@example.com"


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FakeModel:
    """One model of the fake account.

    Attributes:
        cli_id: the id ``agent models`` lists and ``--model`` accepts (may contain brackets,
            acp.md §6.5).
        label: the display name.
        acp_id: the bracketed id of the ACP "variants" picker (acp.md §3.2).
        acp_bare_id: the id when ``parameterizedModelPicker`` is set (acp.md §3.2).
        thinking: whether turns on this model stream thinking before the answer (on Auto,
            "thoughts precede the answer", acp.md §4).
        routable: False for a model ACP's ``session/new`` lists but the account cannot use; the
            prompt then fails in-band with "AI Model Not Found" (acp.md §3.2, openab#493). Such
            models are not listed by ``agent models`` and ``--model`` rejects them.
    """

    cli_id: str
    label: str
    acp_id: str
    acp_bare_id: str
    thinking: bool = False
    routable: bool = True


MODELS: tuple[FakeModel, ...] = (
    FakeModel("auto", "Auto", "default[]", "default", thinking=True),
    FakeModel("composer-2", "Composer 2", "composer-2[fast=true]", "composer-2"),
    FakeModel(
        "claude-4.5-sonnet", "Claude 4.5 Sonnet", "claude-4.5-sonnet[thinking=false]", "claude-4.5-sonnet"
    ),
    FakeModel(
        "claude-4.5-sonnet-thinking",
        "Claude 4.5 Sonnet Thinking",
        "claude-4.5-sonnet[thinking=true]",
        "claude-4.5-sonnet-thinking",
        thinking=True,
    ),
    FakeModel("gpt-5", "GPT-5", "gpt-5[reasoning=medium,fast=false]", "gpt-5", thinking=True),
    FakeModel(
        "gpt-5.3-codex", "GPT-5.3 Codex", "gpt-5.3-codex[reasoning=medium,fast=false]", "gpt-5.3-codex"
    ),
    # acp.md §6.5: CLI ids may contain brackets; keep one so parsers are exercised.
    FakeModel(
        "gpt-5.3-codex[reasoning=high]",
        "GPT-5.3 Codex High",
        "gpt-5.3-codex[reasoning=high,fast=false]",
        "gpt-5.3-codex-high",
        thinking=True,
    ),
    FakeModel("grok-4.6", "Grok 4.6", "grok-4.6[effort=high,fast=true]", "grok-4.6"),
    FakeModel("gemini-3.8-flash", "Gemini 3.8 Flash", "gemini-3.8-flash[thinking=false]", "gemini-3.8-flash"),
    FakeModel(
        "claude-opus-4-7",
        "Claude Opus 4.7",
        "claude-opus-4-7[thinking=true,effort=high]",
        "claude-opus-4-7",
        thinking=True,
        routable=False,
    ),
)

#: The model a print-mode run uses without ``--model`` (marked ``(current)`` by ``agent models``).
DEFAULT_CLI_MODEL = "auto"
#: ``models.currentModelId`` of a new ACP session (acp.md §3.1).
ACP_DEFAULT_MODEL_ID = "default[]"

#: acp.md §6.5: header and trailing tip of ``agent models`` / ``--list-models``.
MODELS_HEADER = "Available models"
MODELS_TIP = "Tip: use --model <id> to switch."


def find_model(model_id: str) -> FakeModel | None:
    """The model with this CLI id, bracketed ACP id or bare ACP id (exact match), or None."""
    for model in MODELS:
        if model_id in (model.cli_id, model.acp_id, model.acp_bare_id):
            return model
    return None


def acp_model_ids(*, parameterized: bool = False) -> list[str]:
    """The ACP model ids ``session/new`` offers (bare ids when ``parameterized``), in order."""
    return [m.acp_bare_id if parameterized else m.acp_id for m in MODELS]


# ----------------------------------------------------------------------------------------------
# Account states and error texts
# ----------------------------------------------------------------------------------------------
class AccountState(StrEnum):
    """Which account situation the fake simulates (env ``FAKE_AGENT_ACCOUNT``)."""

    OK = "ok"
    """Logged in (a stored ``agent login``), quota available."""
    LOGGED_OUT = "logged_out"
    """No stored login; only a ``CURSOR_API_KEY``/``CURSOR_AUTH_TOKEN`` gets requests through."""
    USAGE_LIMIT = "usage_limit"
    """The monthly usage limit is reached (acp.md §5)."""
    RATE_LIMITED = "rate_limited"
    """Short-term rate limiting (HTTP 429 upstream)."""


#: acp.md §1.3 (PROBE): print mode's text when no credentials exist.
AUTH_REQUIRED_TEXT = (
    "Error: Authentication required. Run 'agent login', pass --api-key/--auth-token, "
    "or set CURSOR_API_KEY/CURSOR_AUTH_TOKEN."
)
#: acp.md §3.1: ``data.message`` of the ACP -32000 error before authentication.
AUTH_REQUIRED_ACP_MESSAGE = (
    "Authentication required. Please run 'agent login' first, then call authenticate() with "
    "methodId 'cursor_login'."
)
#: acp.md §5 (BerriAI/litellm-docs#1142): the warning for an invalid API key. The real text is
#: truncated in the source ("The provided API key is inv…"); the ending is our guess [G].
INVALID_API_KEY_TEXT = "⚠ Warning: The provided API key is invalid."
#: acp.md §5: gRPC-status-like network failure text (ORIG tests).
NETWORK_ERROR_TEXT = (
    "Error: T: [internal] Failed to reach the Cursor API. Check that your proxy is reachable."
)
#: acp.md §1.3: rate limiting; the exact CLI wording is not captured [G], so it carries the
#: markers the original's regex looks for (429, "rate limit", "too many requests").
RATE_LIMIT_TEXT = (
    "Error: T: [resource_exhausted] 429 Too Many Requests: rate limit exceeded, try again later."
)


def usage_limit_text(reset_date: str = "12/01/2026") -> str:
    """acp.md §5: the multi-line usage-limit text print mode writes (exit non-zero)."""
    return (
        "Error: You've hit your usage limit\n"
        "fallbackModel: \n"
        "spendLimitHit: false\n"
        f"chatMessage: *You've hit your free requests limit. Your limit will reset on {reset_date}*\n"
        "spendLimits: [50,100,200]"
    )


def unknown_model_text(model: str) -> str:
    """acp.md §3.3: stderr text for a bad ``--model`` (exit 1)."""
    available = ", ".join(m.cli_id for m in MODELS if m.routable)
    return f"Cannot use this model: {model}. Available models: {available}"


#: acp.md §4 and §9 (tiann/hapi#878, openab#493): errors Cursor appends to the agent's text while
#: still reporting success. Keys are the values ``FAKE_AGENT_INBAND_ERROR`` accepts; any other
#: value is appended verbatim.
INBAND_ERRORS: Mapping[str, str] = {
    "resource_exhausted": "Error: T: [resource_exhausted] Error",
    "writable_closed": "Error: T: WritableIterable is closed",
    "usage_limit": "Error: You've hit your usage limit",
    "model_not_found": 'Error: I: AI Model Not Found / Model name is not valid: "{model}"',
}


# ----------------------------------------------------------------------------------------------
# Replies, thinking and usage
# ----------------------------------------------------------------------------------------------
_SHORT = 200


def _describe(text: str) -> str:
    """The text itself when short, else a head plus length and digest (proves it all arrived)."""
    if len(text) <= _SHORT:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:60]}… [{len(text)} chars, sha256 {digest}]"


def expected_reply(text: str, history: Sequence[str] = ()) -> str:
    """The fake agent's answer to the user prompt ``text``.

    ``history`` holds the earlier user prompts of the same conversation (``--resume`` in print
    mode, the same ``sessionId`` over ACP), oldest first; a reply after earlier turns names them,
    so a test can prove history was kept and detect cross-talk between conversations. Prompts
    longer than 200 characters are summarised by head, length and SHA-256.
    """
    reply = f"Fake reply to: {_describe(text)}"
    if history:
        earlier = " | ".join(_describe(h) for h in history)
        reply += f" (turn {len(history) + 1}; earlier: {earlier})"
    return reply


def expected_thinking(text: str) -> str:
    """The thinking text streamed before the answer on models with ``thinking`` set."""
    return f"Thinking about: {_describe(text)[:80]}"


_CHUNK = re.compile(r"\S+\s*|\s+")


def reply_chunks(text: str) -> list[str]:
    """The deltas a reply is streamed in (word by word, whitespace attached)."""
    return _CHUNK.findall(text) or [text]


def usage_for(prompt: str, reply: str, history: Sequence[str] = ()) -> dict[str, int]:
    """Token usage the fake reports, camelCase as in stream-json ``result.usage`` (acp.md §6.3).

    ``inputTokens`` excludes cache reads; earlier turns of a resumed conversation count as cache
    reads, so ``cacheReadTokens`` is non-zero exactly when there is history.
    """
    return {
        "inputTokens": max(1, len(prompt) // 4),
        "outputTokens": max(1, len(reply) // 4),
        "cacheReadTokens": sum(max(1, len(h) // 4) for h in history),
        "cacheWriteTokens": 0,
    }


# ----------------------------------------------------------------------------------------------
# Knobs
# ----------------------------------------------------------------------------------------------
ENV_ACCOUNT = "FAKE_AGENT_ACCOUNT"
ENV_LATENCY = "FAKE_AGENT_LATENCY_S"
ENV_FIRST_DELAY = "FAKE_AGENT_FIRST_DELAY_S"
ENV_CRASH_AFTER = "FAKE_AGENT_CRASH_AFTER"
ENV_CRASH_CODE = "FAKE_AGENT_CRASH_CODE"
ENV_HANG_AFTER = "FAKE_AGENT_HANG_AFTER"
ENV_INBAND_ERROR = "FAKE_AGENT_INBAND_ERROR"
ENV_EXPECT_API_KEY = "FAKE_AGENT_EXPECT_API_KEY"
ENV_STATE_DIR = "FAKE_AGENT_STATE_DIR"
ENV_RECORD = "FAKE_AGENT_RECORD"
ENV_NETWORK_ERROR = "FAKE_AGENT_NETWORK_ERROR"
ENV_USAGE_SHAPE = "FAKE_AGENT_USAGE"
ENV_NO_EXIT = "FAKE_AGENT_NO_EXIT"
ENV_TOOL_CALL = "FAKE_AGENT_TOOL_CALL"
ENV_ANSI = "FAKE_AGENT_ANSI"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Knobs:
    """Behaviour switches read from ``FAKE_AGENT_*`` environment variables (see the package
    docstring of :mod:`cursorpipe.testing.fake_agent` for the full list)."""

    account: AccountState = AccountState.OK
    latency_s: float = 0.0
    first_delay_s: float = 0.0
    crash_after: int | None = None
    crash_code: int = 1
    hang_after: int | None = None
    inband_error: str = ""
    expect_api_key: str = ""
    state_dir: str = ""
    record: str = ""
    network_error: bool = False
    usage_shape: str = "nested"
    no_exit: bool = False
    tool_call: bool = False
    ansi: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Knobs:
        """Read the knobs (unknown or malformed values fall back to the defaults)."""
        env = os.environ if env is None else env
        try:
            account = AccountState(env.get(ENV_ACCOUNT, "ok").strip().lower() or "ok")
        except ValueError:
            account = AccountState.OK
        return cls(
            account=account,
            latency_s=max(0.0, _float(env, ENV_LATENCY, 0.0)),
            first_delay_s=max(0.0, _float(env, ENV_FIRST_DELAY, 0.0)),
            crash_after=_int(env, ENV_CRASH_AFTER),
            crash_code=_int(env, ENV_CRASH_CODE) or 1,
            hang_after=_int(env, ENV_HANG_AFTER),
            inband_error=env.get(ENV_INBAND_ERROR, ""),
            expect_api_key=env.get(ENV_EXPECT_API_KEY, ""),
            state_dir=env.get(ENV_STATE_DIR, ""),
            record=env.get(ENV_RECORD, ""),
            network_error=_flag(env, ENV_NETWORK_ERROR),
            usage_shape=(env.get(ENV_USAGE_SHAPE, "").strip().lower() or "nested"),
            no_exit=_flag(env, ENV_NO_EXIT),
            tool_call=_flag(env, ENV_TOOL_CALL),
            ansi=_flag(env, ENV_ANSI),
        )

    def inband_error_text(self, model: str) -> str:
        """The in-band error to append to the reply ('' for none)."""
        if not self.inband_error:
            return ""
        template = INBAND_ERRORS.get(self.inband_error, self.inband_error)
        return template.replace("{model}", model)
