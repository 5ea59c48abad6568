"""Fixtures for the acp tests: the fake agent's path, a record of what it received, and clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_RECORD


@pytest.fixture(scope="session")
def agent_bin() -> str:
    """Absolute path of the fake ``agent`` executable."""
    return executable()


class Record:
    """What the fake agent received (``FAKE_AGENT_RECORD``), one JSON line per message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def wait_for(self, predicate: Callable[[Record], bool], timeout: float = 10.0) -> None:
        """Poll until ``predicate(self)`` holds: the fake logs what it reads asynchronously."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if loop.time() > deadline:
                raise AssertionError(f"the fake agent's record never satisfied {predicate}")
            await asyncio.sleep(0.02)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text("utf-8").splitlines()
        return [e for e in (json.loads(line) for line in lines) if e.get("mode") == "acp"]

    def inbound(self) -> list[dict[str, Any]]:
        return [e["in"] for e in self.entries() if "in" in e]

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Params of every request or notification ``method`` the agent got."""
        return [m.get("params", {}) for m in self.inbound() if m.get("method") == method]

    def messages(self, method: str) -> list[dict[str, Any]]:
        return [m for m in self.inbound() if m.get("method") == method]

    def starts(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("start")]

    def prompt_sessions(self) -> list[str]:
        return [p["sessionId"] for p in self.calls("session/prompt")]

    def prompt_texts(self) -> list[str]:
        return ["".join(b.get("text", "") for b in p["prompt"]) for p in self.calls("session/prompt")]


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Record:
    """Make the fake agent log every inbound message to a file the test can read."""
    path = tmp_path / "fake-agent-record.jsonl"
    monkeypatch.setenv(ENV_RECORD, str(path))
    return Record(path)


MakeClient = Callable[..., CursorClient]


@pytest.fixture
async def make_client(agent_bin: str) -> AsyncIterator[MakeClient]:
    """``make_client(**config)``: an acp CursorClient on the fake agent, closed after the test."""
    clients: list[CursorClient] = []

    def make(**cfg: Any) -> CursorClient:
        cfg.setdefault("acp_startup_timeout_s", 10)
        client = CursorClient(CursorPipeConfig(strategy="acp", agent_bin=agent_bin, **cfg))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
