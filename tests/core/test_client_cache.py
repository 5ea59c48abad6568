"""Per-loop client cache and the model facts table (shared by the framework integrations)."""

from __future__ import annotations

import asyncio

import cursorpipe
import pytest
from cursorpipe import ConfigurationError, client_for_loop, close_clients, model_facts


async def test_one_client_per_loop_and_configuration() -> None:
    a = client_for_loop({"strategy": "acp"})
    assert client_for_loop({"strategy": "acp"}) is a
    b = client_for_loop({"strategy": "subprocess"})
    assert b is not a
    await close_clients({"strategy": "acp"})
    assert a.closed and not b.closed
    assert client_for_loop({"strategy": "acp"}) is not a
    await close_clients()
    assert b.closed


def test_clients_close_with_their_loop() -> None:
    async def grab() -> cursorpipe.CursorClient:
        return client_for_loop({"strategy": "subprocess"})

    first = asyncio.run(grab())
    assert first.closed
    assert asyncio.run(grab()) is not first


async def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="CURSORPIPE_PORT"):
        client_for_loop({"port": -1})


def test_model_facts_prefix_table_and_default() -> None:
    assert model_facts("claude-4.5-sonnet").context_window == 200_000
    assert model_facts("GPT-5-high").max_output_tokens == 128_000
    assert model_facts("gemini-3-pro").context_window == 1_000_000
    unknown = model_facts("something-new")
    assert unknown.context_window == 128_000
    assert not unknown.image_inputs
