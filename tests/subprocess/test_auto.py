"""The auto strategy: routing order, fallback only on transport failures, sessions pinned."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import (
    AgentCrashError,
    AgentNotFoundError,
    AgentStartupError,
    AuthenticationError,
    ConfigurationError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    ModelInfo,
    ModelNotFoundError,
    ProtocolError,
    Strategy,
    TextDelta,
    TransportCapabilities,
    UsageLimitError,
)
from cursorpipe.testing.fake_agent import catalog as cat
from cursorpipe.transports.auto import DEMOTION_S, AutoSession, AutoTransport
from cursorpipe.transports.base import Transport


class Fleet:
    """Inner MockTransports by strategy, created on demand like the real factory."""

    def __init__(self, **caps: TransportCapabilities) -> None:
        self.made: dict[Strategy, MockTransport] = {}
        self.caps = caps
        self.unavailable: set[Strategy] = set()

    def __call__(self, config: CursorPipeConfig, strategy: Strategy) -> Transport:
        if strategy in self.unavailable:
            raise ConfigurationError("not installed", code="transport_unavailable")
        mock = MockTransport(name=strategy.value, capabilities=self.caps.get(strategy.value))
        mock.models = [ModelInfo(id=f"{strategy.value}-model")]
        self.made[strategy] = mock
        return mock

    def __getitem__(self, name: str) -> MockTransport:
        return self.made[Strategy(name)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ALL = [Strategy.CONNECT, Strategy.ACP, Strategy.SUBPROCESS]


def auto(
    fleet: Fleet, order: list[Strategy] | None = None, clock: Clock | None = None, **cfg: Any
) -> AutoTransport:
    return AutoTransport(CursorPipeConfig(**cfg), factory=fleet, order=order or ALL, clock=clock or Clock())


def test_plan_from_credentials_and_binary(agent_bin: str, tmp_path: Path) -> None:
    fleet = Fleet()
    with_key = AutoTransport(CursorPipeConfig(api_key="crsr_k_123456", agent_bin=agent_bin), factory=fleet)
    assert with_key.plan == [Strategy.CONNECT, Strategy.ACP, Strategy.SUBPROCESS]
    key_only = AutoTransport(CursorPipeConfig(auth_token="tok_abcdef", agent_bin=str(tmp_path / "none")))
    assert key_only.plan == [Strategy.CONNECT]
    binary_only = AutoTransport(CursorPipeConfig(agent_bin=agent_bin))
    assert binary_only.plan == [Strategy.ACP, Strategy.SUBPROCESS]
    nothing = AutoTransport(CursorPipeConfig(agent_bin=str(tmp_path / "none")))
    assert nothing.plan == [Strategy.CONNECT]


async def test_nothing_usable_is_an_authentication_error_saying_what_to_do(tmp_path: Path) -> None:
    config = CursorPipeConfig(agent_bin=str(tmp_path / "none"), max_retries=0)
    async with CursorClient(config) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.generate("auto", "hi")
    assert "CURSOR_API_KEY" in str(info.value) and "agent login" in str(info.value)


def test_stored_cli_login_counts_as_credentials(agent_bin: str, tmp_path: Path) -> None:
    # connect.md §2.1 / acp.md §7: the CLI's stored login on Linux (~/.config/cursor/auth.json).
    auth = Path.home() / ".config" / "cursor" / "auth.json"
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(
        '{"accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "refreshToken": "r_abcdef"}'
    )
    transport = AutoTransport(CursorPipeConfig(agent_bin=str(tmp_path / "none")))
    assert transport.plan == [Strategy.CONNECT]


async def test_first_candidate_answers() -> None:
    fleet = Fleet()
    async with CursorClient(transport=auto(fleet)) as client:
        result = await client.complete("auto", prompt="hi")
    assert result.text == "echo: hi" and result.transport == "connect" and result.fallback_from == ()
    # the others exist as objects (capabilities are combined) but never ran or started anything
    assert all(not m.requests and not m.started_with for s, m in fleet.made.items() if s != Strategy.CONNECT)


@pytest.mark.parametrize(
    "error",
    [
        AgentCrashError("boom", exit_code=1),
        AgentStartupError("slow start"),
        AgentNotFoundError("no agent"),
        ProtocolError("garbage"),
    ],
)
async def test_transport_failures_fall_back(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet()
    transport = auto(fleet, order=[Strategy.ACP, Strategy.SUBPROCESS])
    fleet(CursorPipeConfig(), Strategy.ACP)  # pre-create to script it
    transport._inner[Strategy.ACP] = fleet["acp"]
    fleet["acp"].queue(error)
    with caplog.at_level(logging.WARNING, logger="cursorpipe.auto"):
        async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
            result = await client.complete("auto", prompt="hi")
    assert result.transport == "subprocess" and result.fallback_from == ("acp",)
    assert result.text == "echo: hi"
    assert len(fleet["acp"].requests) == 1 and len(fleet["subprocess"].requests) == 1
    assert any("falling back to subprocess" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "error",
    [
        ModelNotFoundError("gpt-99", ["auto"]),
        AuthenticationError("log in"),
        UsageLimitError("quota"),
        ConfigurationError("bad input"),
    ],
)
async def test_user_errors_do_not_fall_back(error: Exception) -> None:
    fleet = Fleet()
    transport = auto(fleet)
    transport._inner[Strategy.CONNECT] = fleet(CursorPipeConfig(), Strategy.CONNECT)
    fleet["connect"].queue(error)
    async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
        with pytest.raises(type(error)):
            await client.generate("auto", "hi")
    assert not fleet["acp"].requests and not fleet["subprocess"].requests


async def test_no_fallback_after_output_reached_the_caller() -> None:
    fleet = Fleet()
    transport = auto(fleet)
    transport._inner[Strategy.CONNECT] = fleet(CursorPipeConfig(), Strategy.CONNECT)
    fleet["connect"].queue([TextDelta("partial "), AgentCrashError("died mid-answer", exit_code=1)])
    got: list[str] = []
    async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
        with pytest.raises(AgentCrashError):
            await _collect(client.stream("auto", "hi"), got)
    assert got == ["partial "]
    assert not fleet["acp"].requests


async def _collect(stream: Any, into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def test_every_candidate_failing_raises_the_last_error_with_history() -> None:
    fleet = Fleet()
    transport = auto(fleet, order=[Strategy.ACP, Strategy.SUBPROCESS])
    for strategy in (Strategy.ACP, Strategy.SUBPROCESS):
        transport._inner[strategy] = fleet(CursorPipeConfig(), strategy)
    fleet["acp"].queue(AgentCrashError("acp died", exit_code=1))
    fleet["subprocess"].queue(AgentNotFoundError("no agent"))
    async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
        with pytest.raises(AgentNotFoundError) as info:
            await client.generate("auto", "hi")
    assert info.value.details["fallback_from"] == ("acp",)


async def test_failed_transport_is_demoted_for_a_while() -> None:
    fleet = Fleet()
    clock = Clock()
    transport = auto(fleet, order=[Strategy.ACP, Strategy.SUBPROCESS], clock=clock)
    transport._inner[Strategy.ACP] = fleet(CursorPipeConfig(), Strategy.ACP)
    fleet["acp"].queue(AgentCrashError("boom", exit_code=1))
    async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
        assert (await client.complete("auto", prompt="1")).fallback_from == ("acp",)
        second = await client.complete("auto", prompt="2")
        assert second.transport == "subprocess" and second.fallback_from == ()
        assert len(fleet["acp"].requests) == 1
        clock.now += DEMOTION_S + 1
        third = await client.complete("auto", prompt="3")
        assert third.transport == "acp"


async def test_sessions_stay_on_their_transport() -> None:
    fleet = Fleet()
    clock = Clock()
    transport = auto(fleet, order=[Strategy.ACP, Strategy.SUBPROCESS], clock=clock)
    async with CursorClient(CursorPipeConfig(max_retries=0), transport=transport) as client:
        async with client.session("auto") as session:
            assert session.transport_name == "auto"
            handle = session._handle
            assert isinstance(handle, AutoSession) and handle.transport_name == "acp"
            # acp gets demoted by a stateless failure; the session still runs on acp
            fleet["acp"].queue(AgentCrashError("boom", exit_code=1))
            assert (await client.complete("auto", prompt="x")).transport == "subprocess"
            result = await session.prompt("in session")
            assert result.transport == "acp" and result.text == "echo: in session"
            assert session.session_id == fleet["acp"].sessions[0].id
        assert fleet["acp"].sessions[0].closed


async def test_open_session_and_list_models_fall_back() -> None:
    fleet = Fleet()
    transport = auto(fleet, order=[Strategy.ACP, Strategy.SUBPROCESS])
    acp = fleet(CursorPipeConfig(), Strategy.ACP)
    transport._inner[Strategy.ACP] = acp

    async def broken_open(model: str) -> Any:
        raise AgentStartupError("acp never answered initialize")

    acp.open_session = broken_open  # type: ignore[method-assign]
    session = await transport.open_session("auto")
    assert isinstance(session, AutoSession) and session.transport_name == "subprocess"
    models = await transport.list_models()
    assert [m.id for m in models] == ["subprocess-model"]  # acp is demoted now
    await transport.aclose()
    assert acp.closed and fleet["subprocess"].closed


async def test_unavailable_transport_is_skipped_and_start_falls_back() -> None:
    fleet = Fleet()
    fleet.unavailable.add(Strategy.CONNECT)
    transport = auto(fleet)
    await transport.start(pool_size=2)
    assert fleet["acp"].started_with == [2]
    async with CursorClient(transport=transport) as client:
        assert (await client.complete("auto", prompt="x")).transport == "acp"


def test_capabilities_are_safe_across_candidates() -> None:
    fleet = Fleet(
        connect=TransportCapabilities(native_tools=True, images=True, real_usage=True),
        acp=TransportCapabilities(native_tools=False, images=True, real_usage=False),
        subprocess=TransportCapabilities(native_tools=False, images=False, real_usage=True),
    )
    caps = auto(fleet).capabilities
    assert not caps.native_tools and not caps.images and not caps.real_usage
    only_connect = auto(fleet, order=[Strategy.CONNECT]).capabilities
    assert only_connect.native_tools and only_connect.images


@pytest.mark.slow
async def test_real_fallback_from_a_broken_acp_to_subprocess(wrapper: Any, record: Any) -> None:
    # acp fails to start (the CLI build's `acp` crashes at once); auto answers over print mode.
    agent = wrapper('if [ "$1" = acp ]; then echo "acp: fatal: cannot start" >&2; exit 3; fi')
    config = CursorPipeConfig(
        strategy="auto", agent_bin=agent, acp_max_restarts=0, acp_startup_timeout_s=5, max_retries=0
    )
    async with CursorClient(config) as client:
        result = await client.complete("auto", prompt="real fallback")
        transport = await client.transport()
    assert isinstance(transport, AutoTransport) and transport.plan == [Strategy.ACP, Strategy.SUBPROCESS]
    assert result.text == cat.expected_reply("real fallback")
    assert result.transport == "subprocess" and result.fallback_from == ("acp",)
    assert record.last()["prompt_head"] == "real fallback"
