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
#: How many exact secrets are remembered. A team gateway in passthrough mode (issue 17) meets a
#: new key per caller, and a flood of made-up keys must not grow this set (and the cost of every
#: ``redact`` call) without bound. The least recently registered value is forgotten first; the
#: patterns above still mask anything shaped like a Cursor key, bearer token or JWT.
MAX_SECRETS = 1024
_lock = threading.Lock()
_secrets: dict[str, None] = {}
#: ``_secrets`` longest first (a secret that contains another is masked whole), rebuilt on change
#: rather than sorted on every ``redact`` call.
_ordered: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it appears."""
    global _ordered
    if value and len(value) >= 6:
        with _lock:
            if value in _secrets:
                _secrets.pop(value)
                _secrets[value] = None
                return
            _secrets[value] = None
            while len(_secrets) > MAX_SECRETS:
                _secrets.pop(next(iter(_secrets)))
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every known secret and credential-looking token replaced by ``[REDACTED]``."""
    if not text:
        return text
    for value in _ordered:
        if value in text:
            text = text.replace(value, "[REDACTED]")
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
        else:
            text = pattern.sub("[REDACTED]", text)
    return text
