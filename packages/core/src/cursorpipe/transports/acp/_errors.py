"""Map what ``agent acp`` reports onto cursorpipe's error tree, once, at the transport's edge.

Three sources (acp.md §5): JSON-RPC error answers (code + polymorphic ``data``), errors Cursor writes
*into the answer text* while still ending the turn with success (acp.md §4, §9), and the process
itself exiting. The text patterns follow acp.md §5's suggested classifier [G] plus the network
strings of the original cursorpipe (acp.md §1.3).
"""

from __future__ import annotations

import re

from ..._codecs.jsonrpc import AUTH_REQUIRED, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError
from ..._redact import redact
from ...errors import (
    AgentCrashError,
    AuthenticationError,
    CursorPipeError,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    StreamDroppedError,
    UsageLimitError,
)

__all__ = ["TRANSIENT_SESSION_TEXT", "classify_rpc_error", "classify_text", "crash_error"]

NAME = "acp"

#: acp.md §3.1: seen with an invalid key and transiently with valid credentials; retry.
TRANSIENT_SESSION_TEXT = "failed to initialize"

_AUTH = re.compile(
    r"authentication required|agent login|not logged in|failed to open browser for login", re.I
)
_USAGE = re.compile(r"hit your usage limit|spendlimithit|free requests limit|usage limit", re.I)
_RATE = re.compile(r"resource_exhausted|\b429\b|rate[ _-]?limit|too many requests", re.I)
_MODEL = re.compile(
    r"ai model not found|model name is not valid|cannot use this model|invalid model value", re.I
)
_NETWORK = re.compile(
    r"unable to get local issuer certificate|could not resolve host|connection refused|check that your proxy"
    r"|failed to reach the cursor api|econnrefused|enotfound|etimedout|certificate verify failed|\bssl\b",
    re.I,
)
_DROPPED = re.compile(r"writableiterable is closed", re.I)
_QUOTED_MODEL = re.compile(r'(?:not valid|model value|this model):\s*"?([^"\s.]+(?:\[[^\]]*\])?)"?', re.I)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def classify_text(text: str, *, model: str, available: list[str] | None = None) -> CursorPipeError | None:
    """The error an in-band ``Error: …`` text stands for, or ``None`` when it is not a known one."""
    clean = redact(text.strip())
    line = _first_line(clean)
    if _USAGE.search(clean):
        return UsageLimitError(
            f"Cursor says the account's usage limit is reached ({line}). Limits reset monthly; "
            "raise the spend limit in the Cursor dashboard or use another account.",
            transport=NAME,
            details={"agent_text": clean[:2000]},
        )
    if _MODEL.search(clean):
        return ModelNotFoundError(model, available, transport=NAME, details={"agent_text": clean[:2000]})
    if _AUTH.search(clean):
        return AuthenticationError(
            f"Cursor's agent is not authenticated ({line}). Run `agent login` or set CURSOR_API_KEY.",
            transport=NAME,
        )
    if _RATE.search(clean):
        return RateLimitError(f"Cursor rate-limited the request ({line}).", transport=NAME)
    if _NETWORK.search(clean):
        return NetworkError(f"The agent could not reach Cursor ({line}).", transport=NAME)
    if _DROPPED.search(clean):
        return StreamDroppedError(f"Cursor's stream broke off ({line}).", transport=NAME)
    return None


def classify_rpc_error(
    method: str, error: RpcError, *, model: str = "", available: list[str] | None = None
) -> CursorPipeError:
    """A JSON-RPC error answer to ``method`` as a cursorpipe error."""
    text = redact(error.text)
    details = {"rpc_code": error.code, "rpc_method": method}
    if error.code == AUTH_REQUIRED or (_AUTH.search(text) and error.code != METHOD_NOT_FOUND):
        return AuthenticationError(
            "Cursor's agent needs a login: run `agent login` on this machine, or set CURSOR_API_KEY "
            f"(agent said: {text}).",
            transport=NAME,
            details=details,
        )
    if error.code == INVALID_PARAMS and _MODEL.search(text):
        found = _QUOTED_MODEL.search(text)
        return ModelNotFoundError(
            model or (found.group(1) if found else "?"), available, transport=NAME, details=details
        )
    if TRANSIENT_SESSION_TEXT in text.lower():
        # acp.md §3.1: transient with valid credentials, persistent with an invalid API key.
        return SessionError(
            f"Cursor's agent could not start a session ({text}). If this persists, check CURSOR_API_KEY.",
            code="session_services_unavailable",
            retryable=True,
            transport=NAME,
            details=details,
        )
    found_error = classify_text(text, model=model, available=available)
    if found_error is not None:
        found_error.details.update(details)
        return found_error
    return SessionError(
        f"agent acp rejected {method} (JSON-RPC {error.code}: {text}).",
        code=f"rpc_{abs(error.code)}",
        transport=NAME,
        details=details,
    )


def crash_error(exit_code: int | None, stderr: str, *, during: str) -> AgentCrashError:
    """The process ended unexpectedly; ``stderr`` is already redacted by ManagedProcess."""
    tail = stderr.strip()
    last = tail.splitlines()[-1] if tail else ""
    how = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    if exit_code is not None and exit_code < 0:
        how = f"killed by signal {-exit_code}"
    message = f"agent acp stopped unexpectedly {during} ({how})"
    message += f": {last[:500]}" if last else "; it wrote nothing on stderr"
    return AgentCrashError(message + ".", exit_code=exit_code, stderr=tail[-4000:], transport=NAME)


class InbandErrorFilter:
    """Holds back answer text that may be an in-band ``Error: …`` line (acp.md §4, §9).

    Cursor appends model-side failures to the answer (``Error: T: [resource_exhausted] Error``) or
    sends nothing else (``Error: You've hit your usage limit``) and still ends the turn with
    ``end_turn``. Text is passed through as it streams except from the start of a line that begins
    with ``Error:``; at the end that tail is classified. A known failure becomes the error to
    raise; anything else is released as ordinary text.
    """

    _MARK = "Error:"

    #: Cursor's gRPC-status-like error prefixes (acp.md §4, §5). Whether Cursor always starts them on
    #: a new line is not captured [G]; glued to the end of the text they are still recognised, but
    #: only once the answer is over (the text has been streamed by then).
    _GLUED = re.compile(r"Error: [TI]: .{0,300}\Z", re.S)

    def __init__(self) -> None:
        self._held = ""
        self._capturing = False
        self._at_line_start = True
        self._recent = ""

    def feed(self, text: str) -> str:
        """Add a delta; return the text that can be emitted now."""
        if self._capturing:
            self._held += text
            return ""
        buf = self._held + text
        self._held = ""
        starts = ([0] if self._at_line_start else []) + [i + 1 for i, c in enumerate(buf) if c == "\n"]
        for start in starts:
            rest = buf[start:]
            if rest.startswith(self._MARK):
                self._capturing = True
                self._held = rest
                self._recent = (self._recent + buf[:start])[-400:]
                return buf[:start]
            if rest and self._MARK.startswith(rest):
                self._held = rest
                self._at_line_start = True  # the held text begins a line
                self._recent = (self._recent + buf[:start])[-400:]
                return buf[:start]
        if buf:
            self._at_line_start = buf.endswith("\n")
            self._recent = (self._recent + buf)[-400:]
        return buf

    def finish(self, *, model: str, available: list[str] | None = None) -> tuple[str, CursorPipeError | None]:
        """End of the answer: ``(text still to emit, error or None)``."""
        held, self._held = self._held, ""
        if self._capturing:
            error = classify_text(held, model=model, available=available)
            if error is not None:
                return "", error
            return held, None
        glued = self._GLUED.search(self._recent + held)
        if glued is not None:
            error = classify_text(glued.group(0), model=model, available=available)
            if error is not None:
                return held, error
        return held, None
