"""A connect conversation survives export -> JSON -> import unchanged (what replicas hand over)."""

from __future__ import annotations

import json

import pytest
from cursorpipe.errors import SessionError
from cursorpipe.transports.connect._snapshot import (
    ConversationSnapshot,
    export_conversation,
    import_conversation,
)
from cursorpipe.transports.connect._turn import ConversationState


def test_round_trip_through_json() -> None:
    state = ConversationState(model="gpt-x", checkpoint=b"\x00\x01cp", turns=3, roots=[b"r1", b"\xff"])
    state.blobs[b"\x10\x20"] = b"blob"
    snap = export_conversation(state)
    state.blobs[b"later"] = b"not in the snapshot"
    again = import_conversation(ConversationSnapshot(json.loads(json.dumps(snap.meta)), snap.blobs))
    assert again.conversation_id == state.conversation_id
    assert again.blob_key == state.blob_key
    assert (again.model, again.checkpoint, again.turns, again.roots) == (
        "gpt-x",
        b"\x00\x01cp",
        3,
        [b"r1", b"\xff"],
    )
    assert again.blobs == {b"\x10\x20": b"blob"}


def test_other_transports_and_damaged_snapshots_are_typed_errors() -> None:
    with pytest.raises(SessionError) as info:
        export_conversation(object())  # type: ignore[arg-type]
    assert info.value.code == "session_not_shareable"
    meta = export_conversation(ConversationState()).meta
    with pytest.raises(SessionError):
        import_conversation(ConversationSnapshot({**meta, "checkpoint": "%%%"}))
    with pytest.raises(SessionError):
        import_conversation(ConversationSnapshot({**meta, "turns": "3"}))
