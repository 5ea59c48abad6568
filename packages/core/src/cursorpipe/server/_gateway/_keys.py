"""Callers are known by a hash of their key, never by the key (logs, metrics, Redis, errors)."""

from __future__ import annotations

import hashlib
import re

from ...errors import ConfigurationError

__all__ = ["key_hash", "key_label", "parse_allow_list"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def key_hash(key: str) -> str:
    """SHA-256 of a caller's key, hex: what the gateway stores and compares."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_label(hashed: str) -> str:
    """The short form of a key hash used as a metrics label and in logs (12 hex characters: enough
    to tell callers apart, too short to be worth anything to an attacker)."""
    return hashed[:12]


def parse_allow_list(text: str) -> frozenset[str] | None:
    """``CURSORPIPE_ALLOWED_KEY_HASHES``: comma- or space-separated SHA-256 hex digests of the keys
    that may use the gateway; ``""`` = every key Cursor accepts."""
    items = [p.strip().lower() for p in re.split(r"[,\s]+", text) if p.strip()]
    if not items:
        return None
    bad = [i for i in items if not _HEX64.match(i)]
    if bad:
        raise ConfigurationError(
            "CURSORPIPE_ALLOWED_KEY_HASHES: each entry must be the SHA-256 hex digest (64 characters) "
            'of an API key (`printf %s "$KEY" | sha256sum`), not the key itself; '
            f"{len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not.",
            code="invalid_config",
        )
    return frozenset(items)
