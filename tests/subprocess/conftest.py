"""Fixtures for the fake agent, subprocess transport and auto strategy tests (tests/subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import ENV_RECORD, ENV_STATE_DIR


@pytest.fixture(scope="session")
def agent_bin() -> str:
    """Absolute path of the fake ``agent`` executable."""
    return executable()


@pytest.fixture(autouse=True)
def _fake_agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own chat store and no inherited FAKE_AGENT_* knobs."""
    for name in list(os.environ):
        if name.startswith("FAKE_AGENT_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "chats"))


class Record:
    """What the fake agent's print mode received (``FAKE_AGENT_RECORD``), one entry per run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text("utf-8").splitlines()
        return [e for e in (json.loads(line) for line in lines) if e.get("kind") == "print"]

    def last(self) -> dict[str, Any]:
        entries = self.entries()
        assert entries, "the fake agent recorded no print-mode run"
        return entries[-1]


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Record:
    """Turn on the fake agent's run record for this test."""
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv(ENV_RECORD, str(path))
    return Record(path)


@dataclass
class Ran:
    """A finished fake-agent run."""

    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


RunAgent = Callable[..., Ran]


@pytest.fixture
def run_agent(agent_bin: str) -> RunAgent:
    """Run the fake agent to completion: ``run_agent(*args, env={...}, stdin="...")``."""

    def run(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None) -> Ran:
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            [agent_bin, *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=full_env,
            timeout=30,
            check=False,
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def make_client(agent_bin: str) -> Callable[..., CursorClient]:
    """A CursorClient on the subprocess transport with the fake agent (extra config as kwargs)."""

    def make(**cfg: Any) -> CursorClient:
        cfg.setdefault("strategy", "subprocess")
        cfg.setdefault("agent_bin", agent_bin)
        cfg.setdefault("max_retries", 0)
        return CursorClient(CursorPipeConfig(**cfg))

    return make


@pytest.fixture
def wrapper(agent_bin: str, tmp_path: Path) -> Callable[[str], str]:
    """``wrapper(body)``: an executable shell script that runs ``body`` first and then execs the
    fake agent (to simulate a CLI build that fails some subcommand)."""

    def make(body: str) -> str:
        path = tmp_path / f"agent-wrapper-{len(list(tmp_path.glob('agent-wrapper-*')))}"
        path.write_text(f'#!/bin/sh\n{body}\nexec "{agent_bin}" "$@"\n', "utf-8")
        path.chmod(0o755)
        return str(path)

    return make


@pytest.fixture
def alive() -> Callable[[int], bool]:
    """``alive(pid)``: whether the process exists and is not a zombie."""
    return _pid_alive


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return sys.platform != "linux"
    return "\nState:\tZ" not in status
