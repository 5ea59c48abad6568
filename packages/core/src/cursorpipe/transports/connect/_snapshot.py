"""Export and import what a connect conversation needs to continue in another process.

The conversation state is held client-side (connect.md §5.5): the conversation id, the latest
checkpoint, the blobs the service stored with us, the per-conversation blob key and the root
prompt ids this client built (live-dialect.md row 5). The team gateway keeps these in a shared
store so any replica can run the next turn; this module is the only place that knows which fields
of :class:`~._turn.ConversationState` matter for that.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from ...errors import SessionError
from ..base import TransportSession
from ._turn import ConversationState

__all__ = ["ConversationSnapshot", "export_conversation", "import_conversation"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise SessionError(f"Stored conversation state is damaged ({what}).", code="session_state_invalid")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise SessionError(
            f"Stored conversation state is damaged ({what}).", code="session_state_invalid"
        ) from exc


@dataclass
class ConversationSnapshot:
    """A connect conversation at the end of a completed turn: ``meta`` is small JSON-safe data,
    ``blobs`` the blob store (id -> bytes), kept apart so a store can write only the new ones."""

    meta: dict[str, Any]
    blobs: dict[bytes, bytes] = field(default_factory=dict)


def export_conversation(session: TransportSession) -> ConversationSnapshot:
    """The state of a connect conversation, ready to be stored (a copy: later turns do not change
    it). Raises ``SessionError`` for a session of another transport."""
    if not isinstance(session, ConversationState):
        raise SessionError(
            "Only connect conversations can be shared between processes "
            f"(this session belongs to {type(session).__name__}).",
            code="session_not_shareable",
        )
    meta = {
        "conversation_id": session.conversation_id,
        "model": session.model,
        "checkpoint": _b64(session.checkpoint),
        "blob_key": session.blob_key,
        "turns": session.turns,
        "roots": [_b64(r) for r in session.roots],
    }
    return ConversationSnapshot(meta=meta, blobs=dict(session.blobs))


def import_conversation(snapshot: ConversationSnapshot) -> ConversationState:
    """A live conversation state from a snapshot made by :func:`export_conversation`."""
    meta = snapshot.meta
    conversation_id, model, blob_key = meta.get("conversation_id"), meta.get("model"), meta.get("blob_key")
    turns, roots = meta.get("turns", 0), meta.get("roots", [])
    if not (
        isinstance(conversation_id, str)
        and isinstance(model, str)
        and isinstance(blob_key, str)
        and isinstance(turns, int)
        and isinstance(roots, list)
    ):
        raise SessionError("Stored conversation state is damaged (fields).", code="session_state_invalid")
    return ConversationState(
        conversation_id=conversation_id,
        model=model,
        checkpoint=_unb64(meta.get("checkpoint", ""), "checkpoint"),
        blobs=dict(snapshot.blobs),
        blob_key=blob_key,
        turns=turns,
        roots=[_unb64(r, "roots") for r in roots],
    )
