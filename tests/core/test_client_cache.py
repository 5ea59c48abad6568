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


async def test_session_binding_sends_only_what_cursor_has_not_seen() -> None:
    mock = cursorpipe.MockTransport()
    async with cursorpipe.CursorClient(transport=mock) as client:
        binding: cursorpipe.SessionBinding[tuple[str, str]] = cursorpipe.SessionBinding(
            lambda m: m, label="Model", reply_role="assistant"
        )
        binding.check_loop()
        binding.session = await client.create_session()
        first = [("user", "hi")]
        assert binding.new_messages(first) == first
        binding.record(first, first, "hello")
        whole = [("user", "hi"), ("assistant", "hello"), ("user", "again")]
        assert binding.new_messages(whole) == [("user", "again")]  # the whole history was passed
        assert binding.new_messages([("user", "only new")]) == [("user", "only new")]
        with pytest.raises(ConfigurationError, match="no new message"):
            binding.new_messages([("user", "hi"), ("assistant", "hello")])
        session = binding.session
        await binding.aend()
        assert binding.session is None and session.discarded and binding.history == []
        await binding.aend()  # idempotent


def test_session_binding_refuses_a_second_loop() -> None:
    binding: cursorpipe.SessionBinding[str] = cursorpipe.SessionBinding(
        lambda m: ("user", m), label="Model", reply_role="assistant"
    )

    async def touch() -> None:
        binding.check_loop()

    asyncio.run(touch())
    with pytest.raises(cursorpipe.SessionError, match="lives on the event loop"):
        asyncio.run(touch())
