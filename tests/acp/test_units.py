"""Model-id mapping (acp.md §3.2), in-band error filtering (§4) and error classification (§5)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cursorpipe import CursorPipeConfig
from cursorpipe._codecs.jsonrpc import RpcError
from cursorpipe.errors import (
    AuthenticationError,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    UsageLimitError,
)
from cursorpipe.testing.fake_agent.catalog import INBAND_ERRORS, MODELS, usage_limit_text
from cursorpipe.transports.acp import AcpTransport, flatten_messages
from cursorpipe.transports.acp._connection import TurnItem, TurnQueue
from cursorpipe.transports.acp._dispenser import SessionHandle
from cursorpipe.transports.acp._errors import InbandErrorFilter, classify_rpc_error, crash_error
from cursorpipe.transports.acp._models import ModelCatalog, parse_acp_id
from cursorpipe.transports.acp.transport import AcpSession
from cursorpipe.types import ChatMessage, TextDelta, ThinkingDelta, TurnEnd, TurnRequest
from hypothesis import example, given, settings
from hypothesis import strategies as st

CATALOG = ModelCatalog([(m.acp_id, m.label) for m in MODELS], current="default[]")


def test_parse_acp_id() -> None:
    assert parse_acp_id("default[]") == ("default", {})
    assert parse_acp_id("gpt-5[reasoning=medium,fast=false]") == (
        "gpt-5",
        {"reasoning": "medium", "fast": "false"},
    )
    assert parse_acp_id("claude-opus-5") == ("claude-opus-5", {})
    assert parse_acp_id("weird[") == ("weird[", {})


def test_cli_ids_derived_from_acp_options_match_the_cli() -> None:
    assert [m.cli_id for m in CATALOG.models] == [m.cli_id for m in MODELS]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.cli_id)
def test_every_cli_and_acp_id_resolves_to_its_option(model: object) -> None:
    assert CATALOG.resolve(model.cli_id).acp_id == model.acp_id  # type: ignore[attr-defined]
    assert CATALOG.resolve(model.acp_id).acp_id == model.acp_id  # type: ignore[attr-defined]
    assert CATALOG.resolve(model.label).acp_id == model.acp_id  # type: ignore[attr-defined]


def test_cli_suffix_ids_map_onto_variants() -> None:
    catalog = ModelCatalog(
        [
            ("default[]", "Auto"),
            ("claude-4.6-sonnet[thinking=false,effort=medium]", "Sonnet 4.6"),
            ("claude-4.6-sonnet[thinking=true,effort=medium]", "Sonnet 4.6 Thinking"),
            ("claude-4.6-sonnet[thinking=true,effort=high]", "Sonnet 4.6 Thinking High"),
            ("gpt-5.3-codex[reasoning=medium,fast=false]", "Codex"),
            ("gpt-5.3-codex[reasoning=medium,fast=true]", "Codex Fast"),
        ]
    )
    assert catalog.resolve("auto").acp_id == "default[]"
    assert catalog.resolve("default").acp_id == "default[]"
    assert catalog.resolve("claude-4.6-sonnet").acp_id == "claude-4.6-sonnet[thinking=false,effort=medium]"
    assert (
        catalog.resolve("claude-4.6-sonnet-medium-thinking").acp_id
        == "claude-4.6-sonnet[thinking=true,effort=medium]"
    )
    assert (
        catalog.resolve("claude-4.6-sonnet-high-thinking").acp_id
        == "claude-4.6-sonnet[thinking=true,effort=high]"
    )
    assert catalog.resolve("gpt-5.3-codex").acp_id == "gpt-5.3-codex[reasoning=medium,fast=false]"
    assert catalog.resolve("gpt-5.3-codex-fast").acp_id == "gpt-5.3-codex[reasoning=medium,fast=true]"
    # Derived ids round-trip.
    for model in catalog.models:
        assert catalog.resolve(model.cli_id) is model


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        CATALOG.resolve("gpt-99")
    assert "auto" in info.value.available and "gpt-5" in info.value.available


def test_model_infos_carry_acp_ids_as_aliases() -> None:
    infos = CATALOG.infos()
    auto = infos[0]
    assert auto.id == "auto" and "default[]" in auto.aliases and auto.matches("default")
    thinking = next(i for i in infos if i.id == "claude-4.5-sonnet-thinking")
    assert thinking.supports_thinking is True and thinking.matches("claude-4.5-sonnet[thinking=true]")


def test_catalog_from_legacy_models_field() -> None:
    catalog = ModelCatalog.from_session(
        {
            "models": {
                "currentModelId": "default[]",
                "availableModels": [{"modelId": "default[]", "name": "Auto"}],
            }
        }
    )
    assert catalog.current == "default[]" and catalog.models[0].cli_id == "auto"


def _run_filter(chunks: list[str]) -> tuple[str, object]:
    filt = InbandErrorFilter()
    out = "".join(filt.feed(c) for c in chunks)
    tail, error = filt.finish(model="auto", available=["auto"])
    return out + tail, error


def test_inband_filter_passes_ordinary_text_through_unchanged() -> None:
    text = "Here is an Error: not at line start.\nErr on a line\nE\n"
    out, error = _run_filter(list(text))
    assert out == text and error is None


def test_inband_filter_releases_unknown_error_lines() -> None:
    text = "Answer.\nError: my own program said this"
    out, error = _run_filter([text[:9], text[9:12], text[12:]])
    assert out == text and error is None


def test_inband_usage_limit_becomes_usage_limit_error() -> None:
    out, error = _run_filter(list(usage_limit_text()))
    assert out == "" and isinstance(error, UsageLimitError) and not error.retryable


def test_inband_trailing_resource_exhausted_after_text() -> None:
    out, error = _run_filter(["Partial answer", "\n\n", INBAND_ERRORS["resource_exhausted"]])
    assert out == "Partial answer\n\n"
    assert isinstance(error, RateLimitError)


def test_inband_model_not_found() -> None:
    text = INBAND_ERRORS["model_not_found"].replace("{model}", "claude-opus-4-7")
    _, error = _run_filter([text])
    assert isinstance(error, ModelNotFoundError) and error.model == "auto"


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (RpcError(-32000, "Authentication required", {"message": "run 'agent login'"}), AuthenticationError),
        (RpcError(-32602, "Invalid params", {"message": "Invalid model value: gpt-5"}), ModelNotFoundError),
        (
            RpcError(-32603, "Internal error", {"message": "Failed to initialize session services"}),
            SessionError,
        ),
        (
            RpcError(
                -32603, "Internal error", {"message": "Error: T: [internal] Failed to reach the Cursor API"}
            ),
            NetworkError,
        ),
        (
            RpcError(-32603, "Internal error", {"message": "Error: You've hit your usage limit"}),
            UsageLimitError,
        ),
        (RpcError(-32601, "Method not found"), SessionError),
    ],
)
def test_rpc_errors_are_classified(error: RpcError, cls: type[Exception]) -> None:
    mapped = classify_rpc_error("session/new", error, model="gpt-5", available=["auto"])
    assert type(mapped) is cls
    assert mapped.transport == "acp"


def test_transient_session_error_is_retryable() -> None:
    mapped = classify_rpc_error(
        "session/new",
        RpcError(-32603, "Internal error", {"message": "Failed to initialize session services"}),
    )
    assert mapped.retryable and mapped.code == "session_services_unavailable"


def test_crash_error_names_signal_and_last_stderr_line() -> None:
    err = crash_error(-9, "", during="mid-stream")
    assert "signal 9" in str(err) and err.exit_code == -9
    err = crash_error(3, "line one\nfatal: boom\n", during="mid-stream")
    assert "fatal: boom" in str(err) and err.exit_code == 3 and "line one" in err.stderr


def test_flatten_messages() -> None:
    assert flatten_messages([ChatMessage.of("user", "hi")]) == "hi"
    text = flatten_messages(
        [
            ChatMessage.of("system", "Be terse."),
            ChatMessage.of("user", "first"),
            ChatMessage.of("assistant", "reply"),
            ChatMessage.of("user", "second"),
        ]
    )
    assert (
        text == "<system>\nBe terse.\n</system>\n\n<conversation>\nUser: first\n\nAssistant: reply\n"
        "</conversation>\n\nsecond"
    )


def test_child_environment_carries_credentials_and_no_browser() -> None:
    from cursorpipe.transports.acp._connection import child_environment

    base = {"PATH": "/bin", "CURSOR_API_KEY": "old", "CURSORPIPE_BEARER_TOKEN": "server-secret"}
    env = child_environment(base, api_key="crsr_new_key_123", auth_token="")
    assert env["CURSOR_API_KEY"] == "crsr_new_key_123" and "CURSOR_AUTH_TOKEN" not in env
    assert env["NO_OPEN_BROWSER"] == "1" and env["BROWSER"] == "true" and env["PATH"] == "/bin"
    assert not any(k.startswith("CURSORPIPE_") for k in env)
    assert "CURSOR_API_KEY" not in child_environment(base, api_key="", auth_token="tok_abcdef")


def test_inband_error_glued_to_the_end_of_a_line_is_recognised() -> None:
    out, error = _run_filter(["The answer is 4.", "Error: T: [resource_exhausted] Error"])
    assert out == "The answer is 4.Error: T: [resource_exhausted] Error"
    assert isinstance(error, RateLimitError)
    out, error = _run_filter(["It says Error: T: in the middle, then more text."])
    assert error is None


@settings(max_examples=300, deadline=None)
@example(["text ", "\n", "Err", "or: ", "T: [resource_exhausted] Error"], [5, 9, 13])
@given(
    st.lists(
        st.sampled_from(["Error:", "Err", "or: ", "\n", "text ", "E", "T: [resource_exhausted] Error", " "]),
        max_size=12,
    ),
    st.lists(st.integers(min_value=0, max_value=80), max_size=6),
)
def test_inband_filter_is_split_invariant_and_lossless(words: list[str], cuts: list[int]) -> None:
    text = "".join(words)
    whole_out, whole_err = _run_filter([text])
    points = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    out, err = _run_filter(pieces)
    assert (out, type(err)) == (whole_out, type(whole_err)), pieces
    if err is None:
        assert out == text  # nothing is ever lost when no error is recognised


async def test_turn_queue_keeps_order_and_survives_a_cancelled_get() -> None:
    queue = TurnQueue()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put_nowait(TurnItem("update", 1))  # nobody waits: kept, not lost
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(TurnItem("result", 2))
    assert (await getter).payload == 1
    assert queue.qsize() == 1 and queue.get_nowait() == TurnItem("result", 2)


async def test_turn_queue_stall_timer_fires_only_after_a_silent_wait() -> None:
    queue = TurnQueue()
    with pytest.raises(TimeoutError):
        await queue.get(0.05)  # nothing ever arrives
    queue.disarm()
    # Items keep arriving well within the stall time, for longer than the stall time in total:
    # no TimeoutError, and the one timer armed by the first wait serves every later wait.
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        for i in range(8):
            await asyncio.sleep(0.05)
            queue.put_nowait(TurnItem("update", i))

    feeder = loop.create_task(feed())
    got = [(await queue.get(0.3)).payload]
    for _ in range(7):
        got.append((await queue.get(0.3)).payload)
    await feeder
    assert got == list(range(8))
    # An item that lands between the timer firing and the consumer waking is delivered.
    queue.put_nowait(TurnItem("result", "late"))
    assert (await queue.get(0.01)).payload == "late"
    queue.disarm()


async def test_one_stall_watch_serves_every_waiting_turn_of_a_connection() -> None:
    from cursorpipe.transports.acp._connection import StallWatch

    watch = StallWatch()
    quiet, busy, later = TurnQueue(watch), TurnQueue(watch), TurnQueue(watch)
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        for i in range(6):
            await asyncio.sleep(0.05)
            busy.put_nowait(TurnItem("update", i))

    feeder = loop.create_task(feed())
    stalled = loop.create_task(quiet.get(0.2))
    busy_items = [(await busy.get(0.2)).payload for _ in range(6)]  # 0.3 s in all, never silent
    with pytest.raises(TimeoutError):
        await stalled
    await feeder
    assert busy_items == list(range(6))
    # A wait that stalls earlier than the armed timer moves the timer.
    long_wait = loop.create_task(later.get(30.0))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await quiet.get(0.05)
    assert not long_wait.done()
    long_wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_wait
    watch.close()


# ---- the turn loop (issue 16: chunks already waiting go out merged) ---------------------------
class _QueuedConn:
    """Just enough of AcpConnection for a turn: the prompt's items are all queued up front."""

    alive = True

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.ended = False

    async def start_prompt(self, session_id: str, params: dict[str, Any]) -> TurnQueue:
        queue = TurnQueue()
        for item in self.items:
            queue.put_nowait(item)
        return queue

    def end_prompt(self, session_id: str, queue: TurnQueue) -> None:
        self.ended = True


def _update(kind: str, text: str) -> TurnItem:
    return TurnItem("update", {"sessionUpdate": kind, "content": {"type": "text", "text": text}})


async def test_turn_merges_waiting_chunks_of_one_kind_in_order() -> None:
    items = [
        _update("agent_thought_chunk", "th"),
        _update("agent_thought_chunk", "ink"),
        TurnItem("update", {"sessionUpdate": "tool_call", "title": "x"}),  # stays inside
        _update("agent_message_chunk", "Hel"),
        TurnItem("update", {"sessionUpdate": "plan"}),
        _update("agent_message_chunk", "lo"),
        _update("agent_thought_chunk", "again"),
        _update("agent_message_chunk", "!"),
        TurnItem("result", {"stopReason": "end_turn"}),
    ]
    conn = _QueuedConn(items)
    transport = AcpTransport(CursorPipeConfig(agent_bin="/nonexistent"))
    handle = SessionHandle(id="s1", conn=conn, catalog=CATALOG, model_value="default[]", mode="ask")  # type: ignore[arg-type]
    request = TurnRequest(model="auto", messages=(ChatMessage(role="user", content="hi"),))
    events = [e async for e in transport.run(request, session=AcpSession(handle, "auto"))]
    deltas = [(type(e).__name__, e.text) for e in events if isinstance(e, (TextDelta, ThinkingDelta))]
    assert deltas == [
        ("ThinkingDelta", "think"),
        ("TextDelta", "Hello"),
        ("ThinkingDelta", "again"),
        ("TextDelta", "!"),
    ]
    assert isinstance(events[-1], TurnEnd) and events[-1].stop_reason == "stop"
    assert conn.ended


async def test_turn_merged_text_still_goes_through_the_inband_error_filter() -> None:
    text = INBAND_ERRORS["resource_exhausted"]
    half = len(text) // 2
    conn = _QueuedConn(
        [
            _update("agent_message_chunk", text[:half]),
            _update("agent_message_chunk", text[half:]),
            TurnItem("result", {"stopReason": "end_turn"}),
        ]
    )
    transport = AcpTransport(CursorPipeConfig(agent_bin="/nonexistent"))
    handle = SessionHandle(id="s2", conn=conn, catalog=CATALOG, model_value="default[]", mode="ask")  # type: ignore[arg-type]
    request = TurnRequest(model="auto", messages=(ChatMessage(role="user", content="hi"),))
    seen: list[object] = []

    async def consume() -> None:
        async for event in transport.run(request, session=AcpSession(handle, "auto")):
            seen.append(event)

    with pytest.raises(RateLimitError):
        await consume()
    assert not [e for e in seen if isinstance(e, TextDelta)]  # the error text never reaches the caller


def test_catalogue_resolution_is_memoised_and_reused_for_same_options() -> None:
    catalog = ModelCatalog([(m.acp_id, m.label) for m in MODELS], current="default[]")
    first = catalog.resolve("auto")
    assert catalog.resolve("auto") is first and first.base in ("default", "auto")
    result = {
        "models": {
            "currentModelId": "default[]",
            "availableModels": [{"modelId": m.acp_id, "name": m.label} for m in MODELS],
        }
    }
    assert ModelCatalog.from_session(result, previous=catalog) is catalog
    changed = {
        "models": {
            "currentModelId": "default[]",
            "availableModels": [{"modelId": "default[]", "name": "Auto"}],
        }
    }
    fresh = ModelCatalog.from_session(changed, previous=catalog)
    assert fresh is not catalog and [m.acp_id for m in fresh.models] == ["default[]"]
    with pytest.raises(ModelNotFoundError):
        catalog.resolve("no-such-model")


# ---- the session dispenser (issue 16: a refill creates several missing sessions at once) -------
class _AliveConn:
    alive = True


async def test_refill_creates_missing_sessions_together_and_keeps_them_on_a_failure() -> None:
    from cursorpipe.transports.acp._dispenser import REFILL_BATCH, SessionDispenser

    running = 0
    peak = 0
    made: list[str] = []
    fail_at = {7}
    prepared: list[str] = []

    async def create() -> SessionHandle:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.01)
            n = len(made)
            made.append(f"s{n}")
            if n in fail_at:
                raise SessionError("transient", retryable=True)
            return SessionHandle(id=f"s{n}", conn=_AliveConn(), catalog=CATALOG, model_value=None, mode="ask")  # type: ignore[arg-type]
        finally:
            running -= 1

    async def prepare(handle: SessionHandle) -> None:
        prepared.append(handle.id)

    dispenser = SessionDispenser(create, prepare=prepare)
    dispenser.set_target(5)
    await dispenser.fill()
    assert dispenser.ready == 5 and dispenser.created == 5
    assert 1 < peak <= REFILL_BATCH  # created together, not one round trip after another
    assert sorted(prepared) == sorted(h.id for h in dispenser._ready)
    # A burst takes them all: the refill makes up the shortfall in batches; a failure stops it
    # but keeps the sessions that were made.
    for _ in range(5):
        assert (await dispenser.take()).used
    dispenser.set_target(12)
    await dispenser.fill()
    assert made[7] == "s7" and "s7" not in [h.id for h in dispenser._ready]
    assert 0 < dispenser.ready < 12
    assert peak <= REFILL_BATCH
    await dispenser.aclose()


async def test_refill_after_one_take_makes_a_quarter_of_the_pool() -> None:
    from cursorpipe.transports.acp._dispenser import SessionDispenser

    count = 0

    async def create() -> SessionHandle:
        nonlocal count
        count += 1
        await asyncio.sleep(0)
        return SessionHandle(id=f"q{count}", conn=_AliveConn(), catalog=CATALOG, model_value=None, mode="ask")  # type: ignore[arg-type]

    dispenser = SessionDispenser(create)
    dispenser.set_target(8)
    await dispenser.fill()
    assert dispenser.ready == 8  # a fill from empty makes exactly the target
    await dispenser.take()
    await dispenser.fill()
    assert dispenser.ready == 9 and count == 10  # one missing: a batch of 8 // 4 = 2
    await dispenser.take()
    assert dispenser.ready == 8  # still at the target: no refill yet
    await dispenser.take()
    await dispenser.fill()
    assert dispenser.ready == 9 and count == 12  # below the target: one batch of two again
    await dispenser.aclose()


def _session_result(values: list[str], current: str) -> dict[str, Any]:
    return {
        "sessionId": "s",
        "configOptions": [
            {"id": "mode", "category": "mode", "currentValue": "agent", "options": []},
            {
                "id": "model",
                "category": "model",
                "currentValue": current,
                "options": [{"value": v, "name": v.split("[")[0]} for v in values],
            },
        ],
    }


def test_session_catalogue_is_reused_while_sessions_list_the_same_options() -> None:
    transport = AcpTransport(CursorPipeConfig(agent_bin="/nonexistent"))
    ids = [m.acp_id for m in MODELS]
    first, current = transport._session_catalog(_session_result(ids, ids[0]))
    assert current == ids[0] and first.raw is not None
    again, current = transport._session_catalog(_session_result(ids, ids[1]))
    assert again is first and current == ids[1]  # same list: same catalogue, this session's model
    changed, current = transport._session_catalog(_session_result(ids[:-1], ids[0]))
    assert changed is not first and [m.acp_id for m in changed.models] == ids[:-1]
    assert transport._catalog is changed and current == ids[0]
