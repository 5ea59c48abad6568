"""Read the claims of a JWT access token without verifying it (we only need ``exp``/``iat``
for the refresh rule of connect.md §2.3; the server is the one that verifies)."""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["jwt_claims"]


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of ``token`` as a dict, or ``{}`` when it is not a decodable JWT.

    Never raises: connect.md §2.3 says an unparseable token gets the default 30-minute lifetime,
    and official-sdk-as-peer.md §2 shows the SDK accepting plain non-JWT access tokens.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def numeric_claim(claims: dict[str, Any], name: str) -> float | None:
    """A numeric claim (``exp``, ``iat``...) as float seconds, or ``None`` when absent or not a number."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
