"""Fixtures for native and emulated tool calling (issue 7): an emulator per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cursorpipe.testing.emulator import Emulator


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator
