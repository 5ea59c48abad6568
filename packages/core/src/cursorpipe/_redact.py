"""Keep secrets out of logs, error messages and captured stderr.

Two layers: the exact secret values the process knows (registered with :func:`register_secret`)
and patterns that look like Cursor credentials (``crsr_`` keys, bearer tokens, JWTs).
"""

from __future__ import annotations

import re
import threading

__all__ = ["redact", "register_secret"]

_PATTERNS = (
    re.compile(r"crsr_[A-Za-z0-9_\-]{4,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
    # `name: value` pairs. An auth scheme word (`Authorization: Bearer ...`) is not the secret (the
    # bearer pattern above masks what follows it), nor is a `<placeholder>` in a hint telling the
    # user what to send: masking those turned a helpful 401 hint into nonsense (issue 15).
    re.compile(
        r"(?i)((?:api[_-]?key|access[_-]?token|refresh[_-]?token|authorization)[\"']?\s*[:=]\s*[\"']?)"
        r"(?!(?:bearer|basic|token)\b)(?!<)[^\s\"',}]{6,}"
    ),
)
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every known secret and credential-looking token replaced by ``[REDACTED]``."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, "[REDACTED]")
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
        else:
            text = pattern.sub("[REDACTED]", text)
    return text
