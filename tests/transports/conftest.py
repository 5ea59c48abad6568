"""One behavioural suite for every real transport: connect (against the Cursor API emulator),
acp and subprocess (against the fake ``agent``). Each backend says what its deterministic reply
to a prompt is, so the same assertions hold everywhere."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.fake_agent import catalog, executable


@dataclass
class Backend:
    """How to build a client for one transport, and what its replies look like."""

    name: str
    make_config: Callable[..., CursorPipeConfig]
    reply: Callable[[str, Sequence[str]], str]
    """reply(prompt, earlier user prompts of the same conversation) -> the exact answer text."""
    model: str
    models: Sequence[str]
    real_usage: bool


@pytest.fixture(scope="session")
def emulator() -> Iterator[object]:
    from cursorpipe.testing.emulator import Emulator

    with Emulator.start_in_thread() as emu:
        yield emu


def _connect(emu: object) -> Backend:
    from cursorpipe.testing.emulator import expected_reply

    def make(**extra: object) -> CursorPipeConfig:
        return CursorPipeConfig(
            strategy="connect",
            backend_url=emu.url,  # type: ignore[attr-defined]
            api_key=emu.api_key,  # type: ignore[attr-defined]
            **extra,  # type: ignore[arg-type]
        )

    def reply(prompt: str, history: Sequence[str]) -> str:
        # a session: each earlier exchange (user + assistant) comes back from a checkpoint turn
        first = history[0] if history else None
        return str(expected_reply(prompt, earlier=2 * len(history), first=first, turns=len(history)))

    return Backend("connect", make, reply, "auto", list(emu.models), real_usage=True)  # type: ignore[attr-defined]


def _cli(strategy: str) -> Backend:
    agent = executable()

    def make(**extra: object) -> CursorPipeConfig:
        return CursorPipeConfig(strategy=strategy, agent_bin=agent, **extra)  # type: ignore[arg-type]

    def reply(prompt: str, history: Sequence[str]) -> str:
        return catalog.expected_reply(prompt, history)

    return Backend(
        strategy,
        make,
        reply,
        "auto",
        [m.cli_id for m in catalog.MODELS],
        real_usage=strategy == "subprocess",
    )


@pytest.fixture(params=["connect", "acp", "subprocess"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Backend:
    for name in list(os.environ):
        if name.startswith("FAKE_AGENT_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(catalog.ENV_STATE_DIR, str(tmp_path / "chats"))
    if request.param == "connect":
        return _connect(request.getfixturevalue("emulator"))
    return _cli(str(request.param))


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[CursorClient]:
    async with CursorClient(backend.make_config()) as c:
        yield c
