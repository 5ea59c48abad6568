"""``max_tokens`` never truncates silently (issue 15): ``None`` is no limit, a cut by the default
logs a WARNING naming the parameter, ``complete()`` says ``stop_reason="length"``, and the limit
counts with Cursor's own running token count where the transport streams one."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator

import cursorpipe
import pytest
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport, TextDelta, TurnEnd, UsageEvent
from cursorpipe._limits import DEFAULT_MAX_TOKENS, OutputLimiter, is_default_max_tokens
from cursorpipe.testing.emulator import Behaviour, Emulator
from cursorpipe.types import TokenCountDelta

LONG = " ".join(f"word{i:05d}" for i in range(2000))  # 19,999 characters, far beyond 2048 * 4


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(Behaviour(reply=LONG, chunks=40, thinking="")) as emulator:
        yield emulator


def _client(emu: Emulator) -> CursorClient:
    return CursorClient(
        CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key, max_retries=0)
    )


def _cut_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "max_tokens" in r.getMessage()]


async def test_default_cut_warns_and_none_means_no_limit(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cursorpipe")
    async with _client(emu) as client:
        cut = await client.generate("auto", "write a lot")
        assert LONG.startswith(cut) and 0 < len(cut) < len(LONG)
        warnings = _cut_warnings(caplog)
        assert len(warnings) == 1
        assert "default max_tokens=2048" in warnings[0].getMessage()
        assert "max_tokens=None" in warnings[0].getMessage()

        caplog.clear()
        assert await client.generate("auto", "write a lot", max_tokens=None) == LONG
        assert await client.chat("auto", [{"role": "user", "content": "more"}], max_tokens=None) == LONG
        assert _cut_warnings(caplog) == []


async def test_an_explicit_limit_cuts_without_a_warning(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cursorpipe")
    async with _client(emu) as client:
        explicit = await client.complete("auto", prompt="write a lot", max_tokens=2048)
        assert explicit.stop_reason == "length" and LONG.startswith(explicit.text)
        assert _cut_warnings(caplog) == []
        default = await client.complete("auto", prompt="write a lot")
        assert default.stop_reason == "length"
        assert default.text == explicit.text
        assert len(_cut_warnings(caplog)) == 1
        small = await client.complete("auto", prompt="write a lot", max_tokens=10)
        assert small.stop_reason == "length" and len(small.text) <= 10 * 4
        assert small.usage.output_tokens <= 10


async def test_module_shortcuts_accept_none(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSORPIPE_STRATEGY", "connect")
    monkeypatch.setenv("CURSORPIPE_BACKEND_URL", emu.url)
    monkeypatch.setenv("CURSOR_API_KEY", emu.api_key)
    try:
        assert await cursorpipe.generate("auto", "all of it", max_tokens=None) == LONG
        assert await cursorpipe.chat("auto", [{"role": "user", "content": "x"}], max_tokens=None) == LONG
    finally:
        await cursorpipe.close()


def test_signatures_keep_max_tokens_2048_and_accept_none() -> None:
    for fn in (
        CursorClient.generate,
        CursorClient.chat,
        CursorClient.complete,
        cursorpipe.generate,
        cursorpipe.chat,
    ):
        param = inspect.signature(fn).parameters["max_tokens"]
        assert param.default == 2048 and str(param).endswith("= 2048")
        assert "None" in str(param.annotation)
    assert is_default_max_tokens(DEFAULT_MAX_TOKENS)
    assert not is_default_max_tokens(2048) and not is_default_max_tokens(None)


async def test_cursor_token_count_sets_the_limit_when_the_transport_has_one() -> None:
    # 1 token per 2 characters by Cursor's count: max_tokens=10 allows 20 characters, not 40.
    pieces = ["ab" * 5] * 6
    events: list[object] = []
    for piece in pieces:
        events += [TextDelta(piece), TokenCountDelta(5)]
    mock = MockTransport()
    mock.queue([*events, TurnEnd("stop")])  # type: ignore[list-item]
    async with CursorClient(CursorPipeConfig(), transport=mock) as client:
        seen = [e async for e in client.events("auto", prompt="x", max_tokens=10)]
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    # The first piece arrives before any count (4 chars/token); the count then measures 2.
    assert text == "ab" * 10
    assert not any(isinstance(e, TokenCountDelta) for e in seen)  # pipeline-internal
    usage = next(e.usage for e in seen if isinstance(e, UsageEvent))
    assert usage.output_tokens == 10 and usage.estimated
    assert isinstance(seen[-1], TurnEnd) and seen[-1].stop_reason == "length"


def test_limiter_ratio_is_bounded() -> None:
    limiter = OutputLimiter(max_tokens=10)
    limiter.feed("a")
    limiter.count(1000)  # a count wildly at odds with the text must not cut at once
    assert limiter.chars_per_token == 1.5
    text, done = limiter.feed("b" * 100)
    assert len(text) == 15 - 1 and done and limiter.reason == "length"
    assert OutputLimiter(max_tokens=10).chars_per_token == 4.0


def test_counts_before_any_answer_text_are_not_charged_to_the_answer() -> None:
    limiter = OutputLimiter(max_tokens=10)
    limiter.count(5000)  # e.g. a long thinking phase, if Cursor counts it
    assert limiter.counted_tokens == 0 and limiter.chars_per_token == 4.0
    text, done = limiter.feed("x" * 30)
    assert text == "x" * 30 and not done


def test_a_count_mid_stream_moves_the_limit_the_next_delta_sees() -> None:
    limiter = OutputLimiter(None, max_tokens=10)  # 4 characters a token until Cursor counts: 40
    assert limiter.feed("a" * 20) == ("a" * 20, False)
    limiter.count(2)  # 20 characters in 2 tokens: 10 a token, so the limit is now 100
    assert limiter.feed("b" * 70) == ("b" * 70, False)
    assert limiter.feed("c" * 20) == ("c" * 10, True)
    assert limiter.reason == "length" and limiter.feed("d") == ("", True)
    assert limiter.output_tokens() == 10
