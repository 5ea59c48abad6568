"""Behaviour every transport must share (issue 4: "the same behavioural test suite")."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from cursorpipe import (
    CursorClient,
    ModelNotFoundError,
    TextDelta,
    TransportInfo,
    TurnEnd,
    UsageEvent,
)
from cursorpipe.testing.fake_agent import catalog

from .conftest import Backend


async def test_generate_returns_the_deterministic_reply(client: CursorClient, backend: Backend) -> None:
    text = await client.generate(backend.model, "What is the capital of Norway?")
    assert text == backend.reply("What is the capital of Norway?", [])
    assert client.active_requests == 0


async def test_stream_chunks_add_up_to_the_reply(
    client: CursorClient, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks a few ms apart, as from a real model (the fake agent starts on the first request):
    # acp hands on chunks that are already waiting as one delta (issue 16), so with all of them
    # written at once a single chunk would be right too.
    monkeypatch.setenv(catalog.ENV_LATENCY, "0.005")
    chunks = [c async for c in client.stream(backend.model, "stream me a few words please")]
    assert len(chunks) > 1
    assert "".join(chunks) == backend.reply("stream me a few words please", [])


async def test_event_stream_shape(client: CursorClient, backend: Backend) -> None:
    events = [e async for e in client.events(backend.model, prompt="shape check")]
    assert isinstance(events[0], TransportInfo)
    assert events[0].transport == backend.name
    assert isinstance(events[-1], TurnEnd)
    assert events[-1].stop_reason == "stop"
    usage = [e for e in events if isinstance(e, UsageEvent)]
    assert len(usage) == 1
    assert usage[0].usage.output_tokens > 0
    assert usage[0].usage.estimated is (not backend.real_usage)


async def test_chat_with_history_and_system_reaches_the_model(client: CursorClient, backend: Backend) -> None:
    result = await client.complete(
        backend.model,
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    assert "second question" in result.text
    assert result.transport == backend.name
    assert result.stop_reason == "stop"


async def test_session_keeps_history(client: CursorClient, backend: Backend) -> None:
    async with client.session(backend.model) as session:
        first = await session.prompt("my name is Ada")
        second = await session.prompt("what is my name")
        assert first.text == backend.reply("my name is Ada", [])
        assert second.text == backend.reply("what is my name", ["my name is Ada"])
        assert session.turn_count == 2
        assert first.session_id == second.session_id == session.session_id


async def test_sessions_do_not_share_history(client: CursorClient, backend: Backend) -> None:
    async with client.session(backend.model) as a, client.session(backend.model) as b:
        await a.prompt("alpha one")
        await b.prompt("beta one")
        assert (await a.prompt("alpha two")).text == backend.reply("alpha two", ["alpha one"])
        assert (await b.prompt("beta two")).text == backend.reply("beta two", ["beta one"])


async def test_concurrent_requests_get_their_own_answers(client: CursorClient, backend: Backend) -> None:
    prompts = [f"concurrent prompt number {i}" for i in range(8)]
    answers = await asyncio.gather(*(client.generate(backend.model, p) for p in prompts))
    assert list(answers) == [backend.reply(p, []) for p in prompts]
    assert client.active_requests == 0


async def test_models_are_listed(client: CursorClient, backend: Backend) -> None:
    models = await client.list_models()
    ids = [m.id for m in models]
    assert ids
    assert any(m.matches(backend.model) for m in models) or backend.model in ids


async def test_unknown_model_is_a_typed_error(client: CursorClient, backend: Backend) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        await client.generate("no-such-model-xyz", "hello")
    assert "no-such-model-xyz" in str(info.value)
    assert client.active_requests == 0


async def test_abandoned_stream_releases_the_request(client: CursorClient, backend: Backend) -> None:
    async with aclosing(client.stream(backend.model, "a long enough prompt to stream")) as chunks:
        async for _ in chunks:
            break
    assert client.active_requests == 0
    # The transport is still healthy afterwards.
    assert await client.generate(backend.model, "after abandon") == backend.reply("after abandon", [])


async def test_stop_and_max_tokens_are_enforced(client: CursorClient, backend: Backend) -> None:
    full = backend.reply("limits please", [])
    word = full.split()[2]
    stopped = await client.complete(backend.model, prompt="limits please", stop=[word])
    assert stopped.text == full[: full.index(word)]
    assert stopped.stop_reason == "stop"
    cut = await client.complete(backend.model, prompt="limits please", max_tokens=2)
    assert cut.text == full[:8]
    assert cut.stop_reason == "length"


async def test_events_are_text_deltas_of_the_reply(client: CursorClient, backend: Backend) -> None:
    texts = [
        e.text
        async for e in client.events(backend.model, prompt="delta check")
        if isinstance(e, TextDelta) and not e.notice
    ]
    assert "".join(texts) == backend.reply("delta check", [])
