"""Every ```python block of README.md and the package READMEs runs as written.

Each block runs alone in a fresh interpreter (so it cannot lean on names from an earlier block),
offline: the environment points the default configuration at the emulator
(``CURSORPIPE_STRATEGY=connect``, ``CURSORPIPE_BACKEND_URL``, ``CURSOR_API_KEY``) and
``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` at a ``cursorpipe-server --emulator``. That is each
block's offline twin: the same code a reader runs with an account, against the emulator instead of
Cursor.

With ``CURSOR_API_KEY`` set, the ``live`` test also runs every block against real Cursor, except
blocks preceded by ``<!-- offline-only -->`` (they demonstrate the test doubles themselves).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cursorpipe.testing.emulator import Emulator

from ..conftest import LIVE_API_KEY

ROOT = Path(__file__).resolve().parents[2]
READMES = [
    ROOT / "README.md",
    ROOT / "packages/core/README.md",
    ROOT / "packages/langchain_cursorpipe/README.md",
    ROOT / "packages/llamaindex_cursorpipe/README.md",
]
_BLOCK = re.compile(r"(?P<marker><!-- offline-only -->\n)?```python\n(?P<code>.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    code: str
    offline_only: bool

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def _blocks() -> list[Block]:
    found: list[Block] = []
    for path in READMES:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n")
            found.append(
                Block(str(path.relative_to(ROOT)), line, match.group("code"), bool(match.group("marker")))
            )
    return found


BLOCKS = _blocks()


def test_the_readmes_have_python_blocks() -> None:
    assert len([b for b in BLOCKS if b.file == "README.md"]) >= 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator.start_in_thread() as emu:
        yield emu


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``cursorpipe-server --emulator`` as a process, as the README starts it."""
    port = _free_port()
    env = _clean_env(tmp_path_factory.mktemp("server-home"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cursorpipe.server.cli", "--emulator", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("cursorpipe-server --emulator did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CURSOR", "OPENAI_", "ANTHROPIC_")) and k not in ("NO_COLOR",)
    }
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(block: Block, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", block.code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs_offline(block: Block, emulator: Emulator, server: str, tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env.update(
        CURSORPIPE_STRATEGY="connect",
        CURSORPIPE_BACKEND_URL=emulator.url,
        CURSOR_API_KEY=emulator.api_key,
        OPENAI_BASE_URL=server,
        OPENAI_API_KEY="unused",
        ANTHROPIC_BASE_URL=server.removesuffix("/v1"),  # Anthropic clients add /v1 themselves
        ANTHROPIC_API_KEY="unused",
    )
    done = _run(block, env, tmp_path)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    if "print(" in block.code:
        assert done.stdout.strip(), f"{block.id} printed nothing"


@pytest.mark.live
@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if not b.offline_only], ids=[b.id for b in BLOCKS if not b.offline_only]
)
def test_block_runs_live(block: Block, tmp_path: Path) -> None:
    if "OPENAI_BASE_URL" in block.code or "ANTHROPIC_BASE_URL" in block.code:
        pytest.skip("needs a running cursorpipe-server; covered offline")
    env = _clean_env(tmp_path)
    env.update(CURSOR_API_KEY=LIVE_API_KEY, CURSORPIPE_STRATEGY="connect")
    done = _run(block, env, tmp_path)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
