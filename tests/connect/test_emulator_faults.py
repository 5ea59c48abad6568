"""Injected faults and auth rules of the emulator, seen through the raw client and mapped with the
codec's error mapping (so the faults look the way Cursor's errors look, connect.md §8)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cursorpipe._codecs.connect import decode_error_details
from cursorpipe.errors import (
    AuthenticationError,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    RateLimitError,
    UsageLimitError,
)
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply
from cursorpipe.testing.emulator.raw import exchange_token, raw_turn_h2, raw_turn_sse
from cursorpipe.transports.connect._errors import map_connect_error


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as e:
        yield e


@pytest.mark.parametrize(
    ("fault", "cls", "code", "enum_name"),
    [
        (Fault.UNAUTHENTICATED, AuthenticationError, "unauthenticated", "UNAUTHORIZED"),
        (Fault.USAGE_LIMIT, UsageLimitError, "resource_exhausted", "PRO_USER_USAGE_LIMIT"),
        (Fault.RATE_LIMIT, RateLimitError, "resource_exhausted", "RATE_LIMITED"),
        (Fault.BAD_MODEL, ModelNotFoundError, "invalid_argument", "BAD_MODEL_NAME"),
        (Fault.OUTDATED_CLIENT, OutdatedClientError, "failed_precondition", "OUTDATED_CLIENT"),
        (Fault.UNAVAILABLE, NetworkError, "unavailable", None),
    ],
)
async def test_error_faults_end_the_stream_with_connect_errors(
    emu: Emulator, fault: Fault, cls: type[Exception], code: str, enum_name: str | None
) -> None:
    emu.inject(fault)
    assert emu.pending_faults == [fault]
    turn = await raw_turn_sse(emu.url, emu.api_key, "x")
    assert emu.pending_faults == []
    assert not turn.turn_ended and turn.text == ""
    assert turn.end is not None and turn.end.error is not None
    assert turn.end.error.code == code
    info = decode_error_details(turn.end.error.details)
    assert (info.name if info else None) == enum_name
    exc = map_connect_error(turn.end.error, metadata=turn.end.metadata)
    assert type(exc) is cls
    # the fault is used up: the next turn works
    assert (await raw_turn_sse(emu.url, emu.api_key, "y")).text == expected_reply("y")


async def test_rate_limit_carries_retry_after(emu: Emulator) -> None:
    emu.inject(Fault.RATE_LIMIT, retry_after=7)
    turn = await raw_turn_h2(emu.url, emu.api_key, "x")
    assert turn.end is not None and turn.end.error is not None
    exc = map_connect_error(turn.end.error, metadata=turn.end.metadata)
    assert isinstance(exc, RateLimitError) and exc.retryable and exc.retry_after == 7.0


async def test_unknown_model_is_bad_model_name(emu: Emulator) -> None:
    turn = await raw_turn_sse(emu.url, emu.api_key, "x", model="gpt-99")
    assert turn.end is not None and turn.end.error is not None
    exc = map_connect_error(turn.end.error, model="gpt-99", available_models=emu.models)
    assert isinstance(exc, ModelNotFoundError) and "composer-2" in exc.available
    # aliases are accepted
    assert (await raw_turn_sse(emu.url, emu.api_key, "y", model="sonnet-4.5")).turn_ended


async def test_drop_mid_stream_ends_without_turn_ended(emu: Emulator) -> None:
    emu.inject(Fault.DROP_MID_STREAM)
    blobs: dict[bytes, bytes] = {}
    turn = await raw_turn_sse(emu.url, emu.api_key, "long answer please", blobs=blobs)
    assert turn.end is not None and turn.end.error is None  # a clean end-stream {}
    assert not turn.turn_ended
    assert turn.text and expected_reply("long answer please").startswith(turn.text)
    assert turn.text != expected_reply("long answer please")
    assert emu.runs[-1].outcome == "dropped"


async def test_resume_after_a_drop_completes_the_same_run(emu: Emulator) -> None:
    emu.inject(Fault.DROP_MID_STREAM)
    blobs: dict[bytes, bytes] = {}
    dropped = await raw_turn_h2(emu.url, emu.api_key, "resume me", blobs=blobs, conversation_id="c1")
    run_id = emu.runs[-1].run_request.run_id  # type: ignore[union-attr]
    from cursorpipe._proto.agent.v1 import agent_pb2

    def to_resume(msg: agent_pb2.AgentClientMessage) -> None:
        msg.run_request.run_id = run_id
        msg.run_request.action.resume_action.SetInParent()

    resumed = await raw_turn_sse(
        emu.url, emu.api_key, "", blobs=blobs, checkpoint=dropped.checkpoint, mutate_first=to_resume
    )
    assert resumed.turn_ended and resumed.text == expected_reply("resume me")


async def test_stall_is_silence(emu: Emulator) -> None:
    emu.behaviour.heartbeat_interval_s = 0.05  # even configured heartbeats stop during a stall
    emu.inject(Fault.STALL, seconds=1.0)
    start = time.monotonic()
    turn = await raw_turn_sse(emu.url, emu.api_key, "stall")
    assert time.monotonic() - start >= 1.0
    assert turn.turn_ended and turn.text == expected_reply("stall")
    assert emu.runs[-1].fault is Fault.STALL


async def test_endless_stall_until_client_gives_up(emu: Emulator) -> None:
    emu.inject(Fault.STALL)
    with pytest.raises((TimeoutError, httpx.ReadTimeout)):
        await asyncio.wait_for(raw_turn_sse(emu.url, emu.api_key, "stall", io_timeout=0.5), timeout=3)
    for _ in range(50):
        if emu.runs[-1].finished:
            break
        await asyncio.sleep(0.05)
    assert emu.runs[-1].outcome == "disconnected"


@pytest.mark.parametrize("fault", [Fault.SLOW_FIRST_TOKEN, Fault.TOKEN_DELAY])
async def test_delays(emu: Emulator, fault: Fault) -> None:
    emu.behaviour.chunks = 4
    emu.inject(fault, seconds=0.3)
    turn = await raw_turn_h2(emu.url, emu.api_key, "delay")
    assert turn.text == expected_reply("delay")
    assert turn.first_token_s is not None and len(turn.delta_times) == 4
    if fault is Fault.SLOW_FIRST_TOKEN:
        assert turn.first_token_s >= 0.3
    else:
        gaps = [b - a for a, b in zip(turn.delta_times, turn.delta_times[1:], strict=False)]
        assert all(g >= 0.29 for g in gaps), gaps


async def test_exchange_fault_and_wrong_key(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        bad = await client.post(
            f"{emu.url}/auth/exchange_user_api_key", headers={"authorization": "Bearer crsr_wrong"}, json={}
        )
        assert bad.status_code == 401
        emu.inject(Fault.UNAUTHENTICATED_EXCHANGE)
        with pytest.raises(httpx.HTTPStatusError):
            await exchange_token(client, emu.url, emu.api_key)
        token = await exchange_token(client, emu.url, emu.api_key)
        assert token.count(".") == 2 and emu.tokens_issued == 1


@pytest.mark.parametrize("token", ["crsr_emulator_test_key", "not-a-jwt", "a.b.c"])
async def test_rpcs_reject_tokens_not_issued(emu: Emulator, token: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{emu.url}/aiserver.v1.ServerConfigService/GetServerConfig",
            content=b"",
            headers={"authorization": f"Bearer {token}", "content-type": "application/proto"},
        )
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    with pytest.raises(httpx.HTTPStatusError, match="401"):  # BidiAppend is unary: HTTP 401
        await raw_turn_sse(emu.url, emu.api_key, "x", token=token)
    turn = await raw_turn_h2(emu.url, emu.api_key, "x", token=token)  # a stream: end-stream error
    assert turn.end is not None and turn.end.error is not None and turn.end.error.code == "unauthenticated"


async def test_tokens_expire() -> None:
    async with Emulator(Behaviour(token_lifetime_s=1)) as emu, httpx.AsyncClient() as client:
        token = await exchange_token(client, emu.url, emu.api_key)
        ok = await raw_turn_sse(emu.url, emu.api_key, "x", token=token)
        assert ok.turn_ended
        await asyncio.sleep(2.05)
        late = await raw_turn_h2(emu.url, emu.api_key, "x", token=token)
        assert late.end is not None and late.end.error is not None
        exc = map_connect_error(late.end.error)
        assert isinstance(exc, AuthenticationError)
        assert "expired" in late.end.error.details[0].debug["details"]["detail"]


async def test_inject_times(emu: Emulator) -> None:
    emu.inject(Fault.UNAVAILABLE, times=2)
    codes = []
    for _ in range(3):
        t = await raw_turn_sse(emu.url, emu.api_key, "x")
        codes.append(t.end.error.code if t.end and t.end.error else None)
    assert codes == ["unavailable", "unavailable", None]


async def test_http_error_fault_is_a_bare_status(emu: Emulator) -> None:
    emu.inject(Fault.HTTP_ERROR, status=503, retry_after=2)
    with pytest.raises(httpx.HTTPStatusError) as info:
        await raw_turn_sse(emu.url, emu.api_key, "x")
    assert info.value.response.status_code == 503
    assert info.value.response.headers["retry-after"] == "2"
    emu.inject(Fault.HTTP_ERROR)
    with pytest.raises(RuntimeError, match="HTTP 429"):
        await raw_turn_h2(emu.url, emu.api_key, "x")
    assert (await raw_turn_h2(emu.url, emu.api_key, "y")).turn_ended
