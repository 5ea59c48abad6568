"""The secret registry stays bounded (a passthrough gateway meets one new key per caller) and
keeps masking what it remembers."""

from __future__ import annotations

from cursorpipe import _redact
from cursorpipe._redact import MAX_SECRETS, redact, register_secret


def test_known_secrets_are_masked_longest_first() -> None:
    register_secret("opaque-secret-value")
    register_secret("opaque-secret-value-and-more")
    assert redact("x opaque-secret-value-and-more y") == "x [REDACTED] y"
    assert redact("x opaque-secret-value y") == "x [REDACTED] y"


def test_the_registry_is_bounded_and_forgets_the_oldest() -> None:
    first = "first-opaque-value"
    register_secret(first)
    for i in range(MAX_SECRETS + 50):
        register_secret(f"flood-value-{i:06d}")
    assert len(_redact._secrets) == MAX_SECRETS
    assert first not in _redact._secrets
    assert redact(f"flood-value-{MAX_SECRETS + 49:06d}") == "[REDACTED]"
    # A key shaped like Cursor's is still masked by the patterns after it was forgotten.
    assert redact("key crsr_forgotten_key_123 here") == "key [REDACTED] here"


def test_redact_work_does_not_grow_with_registrations() -> None:
    for i in range(3 * MAX_SECRETS):
        register_secret(f"burst-value-{i:06d}")
    # Bounded work: at most MAX_SECRETS substring checks per call, whatever was registered.
    assert len(_redact._ordered) == len(_redact._secrets) == MAX_SECRETS
    assert redact(f"burst-value-{3 * MAX_SECRETS - 1:06d}") == "[REDACTED]"
