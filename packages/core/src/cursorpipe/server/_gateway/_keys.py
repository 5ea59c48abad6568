"""Callers are known by a hash of their key, never by the key (logs, metrics, Redis, errors)."""

from __future__ import annotations

import hashlib

__all__ = ["key_hash", "key_label", "parse_allow_list"]


def key_hash(key: str) -> str:
    """SHA-256 of a caller's key, hex: what the gateway stores and compares."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_label(hashed: str) -> str:
    """The short form of a key hash used as a metrics label and in logs (12 hex characters: enough
    to tell callers apart, too short to be worth anything to an attacker)."""
    return hashed[:12]


def parse_allow_list(text: str) -> frozenset[str] | None:
    """``CURSORPIPE_ALLOWED_KEY_HASHES`` as validated by the config (lowercase digests joined by
    commas) as a set; ``None`` when empty (every key Cursor accepts may call)."""
    items = frozenset(p for p in text.split(",") if p)
    return items or None
