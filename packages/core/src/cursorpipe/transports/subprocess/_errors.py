"""Map what ``agent --print`` reports (stderr, stray stdout, exit code, in-band error text) onto
cursorpipe's error tree, once, at the transport's edge.

Patterns follow acp.md §5's suggested classifier [G] (auth, quota, model, network) plus the
network strings of the original cursorpipe (acp.md §1.3); the original's gaps are closed: the auth
text of print mode and Cursor's usage-limit wording are recognised (acp.md §1.3 "Gaps").
"""

from __future__ import annotations

import re

from ..._redact import redact
from ...errors import (
    AgentCrashError,
    AuthenticationError,
    CursorPipeError,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    UsageLimitError,
)

__all__ = ["NAME", "classify_failure", "classify_text", "last_line"]

NAME = "subprocess"

_AUTH = re.compile(
    r"authentication required|run 'agent login'|not logged in|api key is inv|invalid api key|unauthori[sz]ed",
    re.I,
)
_USAGE = re.compile(r"hit your usage limit|spendlimithit: true|free requests limit|usage limit", re.I)
_RATE = re.compile(r"resource_exhausted|\b429\b|rate[ _-]?limit|too many requests", re.I)
_MODEL = re.compile(
    r"cannot use this model|ai model not found|model name is not valid|invalid model value", re.I
)
_NETWORK = re.compile(
    r"unable to get local issuer certificate|could not resolve host|connection refused|check that your proxy"
    r"|failed to reach the cursor api|econnrefused|enotfound|etimedout|econnreset|certificate verify failed"
    r"|\bssl\b|network error|socket hang up",
    re.I,
)
_CHAT_NOT_FOUND = re.compile(r"chat not found|session .* not found|no chat with id", re.I)
_AVAILABLE = re.compile(r"Available models:\s*(.+)", re.I | re.S)
_BAD_MODEL = re.compile(
    r"(?:cannot use this model:\s*(?P<a>.+?)\.\s+available models"
    r"|model name is not valid:\s*\"(?P<b>[^\"]*)\""
    r"|invalid model value:\s*(?P<c>\S+))",
    re.I,
)
_STDERR_MESSAGE_MAX = 4000


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (redacted)."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return redact(line.strip())
    return ""


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if (
            line.strip().lower().startswith(("error", "⚠", "warning"))
            or "cannot use this model" in line.lower()
        ):
            return redact(line.strip())
    return last_line(text)


def _available(text: str) -> list[str]:
    match = _AVAILABLE.search(text)
    if not match:
        return []
    first_line = match.group(1).splitlines()[0]
    return [m.strip() for m in first_line.split(",") if m.strip()]


def classify_text(text: str, *, model: str = "") -> CursorPipeError | None:
    """The typed error ``text`` describes (stderr, stray stdout or in-band error), or None."""
    if not text.strip():
        return None
    safe = redact(text)
    if _AUTH.search(text):
        return AuthenticationError(
            "The Cursor CLI is not authenticated: "
            f"{_first_error_line(safe)} Set CURSOR_API_KEY (or CURSORPIPE_API_KEY), or run `agent login`.",
            transport=NAME,
        )
    if _USAGE.search(text):
        return UsageLimitError(
            "Your Cursor usage limit is reached (limits reset monthly; retrying will not help): "
            f"{_first_error_line(safe)}",
            transport=NAME,
        )
    if _RATE.search(text):
        return RateLimitError(f"Cursor rate-limited the request: {_first_error_line(safe)}", transport=NAME)
    if _MODEL.search(text):
        found = _BAD_MODEL.search(text)
        name = model
        if found:
            name = next((g for g in found.groups() if g), model).strip()
        return ModelNotFoundError(name or model, _available(text), transport=NAME)
    if _NETWORK.search(text):
        return NetworkError(
            f"The Cursor CLI could not reach Cursor: {last_line(safe)} Check the network, proxy "
            "(HTTPS_PROXY, NODE_USE_ENV_PROXY=1) and CA settings (NODE_EXTRA_CA_CERTS).",
            transport=NAME,
        )
    if _CHAT_NOT_FOUND.search(text):
        return SessionError(
            f"The Cursor CLI does not know this chat: {last_line(safe)} Open a new session.", transport=NAME
        )
    return None


def classify_failure(
    *, exit_code: int | None, stderr: str, stdout_extra: str = "", model: str = ""
) -> CursorPipeError:
    """The error for a print-mode run that ended without a successful ``result``.

    ``stderr`` must already be redacted (``ManagedProcess.stderr_tail``). Unrecognised failures are
    ``AgentCrashError`` with the exit code and the stderr tail.
    """
    combined = "\n".join(part for part in (stderr, stdout_extra) if part)
    known = classify_text(combined, model=model)
    if known is not None:
        if isinstance(known, CursorPipeError):
            known.details.setdefault("exit_code", exit_code)
        return known
    tail = redact(combined)[-_STDERR_MESSAGE_MAX:]
    if exit_code is not None and exit_code < 0:
        how = f"was killed by signal {-exit_code}"
    elif exit_code == 0:
        how = "exited without a result"
    else:
        how = f"exited with code {exit_code}"
    detail = f": {last_line(tail)}" if tail.strip() else " (no output on stderr)"
    return AgentCrashError(
        f"The Cursor CLI (agent --print) {how}{detail}. Retry; if it persists, run the agent by hand "
        "to see its output, or use another transport.",
        exit_code=exit_code,
        stderr=tail,
        transport=NAME,
    )
