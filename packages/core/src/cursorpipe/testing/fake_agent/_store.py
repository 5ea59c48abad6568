"""The fake agent's chat store: one JSON file per chat id, so a later process can ``--resume``.

acp.md §6.4: print mode continues a conversation with ``--resume <chat id>`` and ``agent
create-chat`` mints an id up front. The real CLI keeps chats under ``~/.cursor/projects/…``; the
fake keeps them under ``$FAKE_AGENT_STATE_DIR`` or ``$CURSOR_DATA_DIR/fake-agent-chats`` or
``~/.cursor/fake-agent-chats``. Standard library only (the fake must start fast).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # POSIX advisory locks keep concurrent resumes of one chat from losing turns.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment,unused-ignore]

__all__ = ["Chat", "ChatStore"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass
class Chat:
    """One stored conversation: the user prompts and the replies, oldest first."""

    id: str
    model: str = ""
    prompts: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "model": self.model, "prompts": self.prompts, "replies": self.replies}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Chat:
        """Parse the stored form (tolerant of missing fields)."""
        return cls(
            id=str(data.get("id", "")),
            model=str(data.get("model", "")),
            prompts=[str(p) for p in data.get("prompts", [])],
            replies=[str(r) for r in data.get("replies", [])],
        )


class ChatStore:
    """Chats on disk under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: str = "") -> ChatStore:
        """The store the environment selects (see the module docstring)."""
        if state_dir:
            return cls(Path(state_dir))
        if env.get("CURSOR_DATA_DIR"):
            return cls(Path(env["CURSOR_DATA_DIR"]) / "fake-agent-chats")
        home = env.get("HOME") or str(Path.home())
        return cls(Path(home) / ".cursor" / "fake-agent-chats")

    @staticmethod
    def valid_id(chat_id: str) -> bool:
        """Whether ``chat_id`` can name a chat file (no path tricks)."""
        return bool(_ID.match(chat_id))

    def _path(self, chat_id: str) -> Path:
        return self.root / f"{chat_id}.json"

    def create(self, model: str = "") -> Chat:
        """A new, empty chat with a fresh UUID, saved immediately."""
        chat = Chat(id=str(uuid.uuid4()), model=model)
        self.save(chat)
        return chat

    def exists(self, chat_id: str) -> bool:
        """Whether the chat is stored."""
        return self.valid_id(chat_id) and self._path(chat_id).is_file()

    @contextlib.contextmanager
    def locked(self, chat_id: str) -> Iterator[Chat | None]:
        """Hold the chat's lock for a whole turn; yields the chat (or None if unknown)."""
        if not self.valid_id(chat_id):
            yield None
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{chat_id}.lock", "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield self.load(chat_id)
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def load(self, chat_id: str) -> Chat | None:
        """The chat, or None when it does not exist or is unreadable."""
        if not self.exists(chat_id):
            return None
        try:
            data = json.loads(self._path(chat_id).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return Chat.from_json(data) if isinstance(data, dict) else None

    def save(self, chat: Chat) -> None:
        """Write atomically (temp file + rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{chat.id}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(chat.to_json()), "utf-8")
        os.replace(tmp, self._path(chat.id))
