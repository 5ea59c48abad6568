"""Conformance: Cursor's official Python SDK (cursor-sdk 1.1.0, a declared dev dependency) completes
two chat turns against the emulator, over RunSSE + BidiAppend and over the h2c ``Run`` RPC.

The SDK is Cursor's own client, so this checks that the emulator is faithful to Cursor rather than to
our client (official-sdk-as-peer.md). The SDK runs in a subprocess with a temp HOME/TMPDIR/cwd
(it writes an agent store and leaves bridge dirs behind), built-in tools disabled (``tools=[]``), every
SDK call under an alarm, and the whole process group killed on overrun: a faulty emulator otherwise
hangs the SDK in its multi-minute retry loop (official-sdk-as-peer.md §4).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import platform
import signal
import sys
from pathlib import Path

import pytest
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

# The dev dependency is declared only where cursor-sdk ships wheels (root pyproject.toml).
_SDK_PLATFORM = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")

DRIVER = r"""
import json, os, signal, sys, time

class Overrun(Exception):
    pass

def _alarm(signum, frame):
    raise Overrun("SDK call took too long")

signal.signal(signal.SIGALRM, _alarm)
CALL_TIMEOUT = int(os.environ["DRIVER_CALL_TIMEOUT"])

def timed(fn, *args, **kwargs):
    signal.alarm(CALL_TIMEOUT)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.alarm(0)

from cursor_sdk import AgentOptions, Client, LocalAgentOptions

ws, prompts = sys.argv[1], sys.argv[2:]
out = {"turns": []}
state_root = os.path.join(os.environ["HOME"], "state")
client = timed(Client.launch_bridge, workspace=ws, state_root=state_root, timeout=CALL_TIMEOUT)
try:
    options = AgentOptions(
        model="composer-2",
        api_key=os.environ["CURSOR_API_KEY"],
        local=LocalAgentOptions(cwd=ws),
        tools=[],
    )
    agent = timed(client.create_agent, options)
    for prompt in prompts:
        def one_turn():
            run = agent.send(prompt)
            kinds = [type(ev).__name__ for ev in run]
            return run.wait(), kinds
        res, kinds = timed(one_turn)
        u = res.usage
        out["turns"].append({
            "status": res.status,
            "result": res.result,
            "error": res.error_message,
            "usage": None if u is None else {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "reasoning_tokens": u.reasoning_tokens,
            },
            "events": len(kinds),
        })
finally:
    timed(client.close)
print("RESULT " + json.dumps(out), flush=True)
"""


def _require_sdk() -> None:
    if importlib.util.find_spec("cursor_sdk") is not None:
        return
    if _SDK_PLATFORM:
        pytest.fail(
            "cursor-sdk is not importable although it is a declared dev dependency on this platform; "
            "run `python3 dev.py sync` (it installs cursor-sdk==1.1.0 from PyPI)."
        )
    pytest.skip(f"cursor-sdk ships no wheel for {sys.platform}/{platform.machine()}")


async def _drive_sdk(emu: Emulator, tmp_path: Path, prompts: list[str], timeout: float = 90.0) -> dict:  # type: ignore[type-arg]
    home, ws, tmp = tmp_path / "home", tmp_path / "ws", tmp_path / "tmp"
    for d in (home, ws, tmp):
        d.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "CURSOR_BACKEND_URL": emu.url,
        "CURSOR_API_KEY": emu.api_key,
        "DRIVER_CALL_TIMEOUT": "40",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(driver),
        str(ws),
        *prompts,
        cwd=str(ws),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: the Node bridge dies with it
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = await proc.communicate()
        pytest.fail(
            f"the official SDK did not finish within {timeout} s; stderr tail:\n{err.decode()[-2000:]}"
        )
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"SDK driver failed (rc={proc.returncode}):\n{err.decode()[-3000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :])  # type: ignore[no-any-return]


@pytest.mark.parametrize("transport", ["runsse", "run"], ids=["http1-runsse-bidiappend", "h2c-run"])
async def test_official_sdk_two_turns(tmp_path: Path, transport: str) -> None:
    _require_sdk()
    behaviour = Behaviour(advertise_http2=transport == "run", chunks=3)
    async with Emulator(behaviour) as emu:
        result = await _drive_sdk(emu, tmp_path, ["What is 2+2?", "And 3+3?"])
        runs = list(emu.runs)
        paths = emu.paths()

    t1, t2 = result["turns"]
    assert t1["status"] == "finished", t1
    assert t2["status"] == "finished", t2
    # streamed text, as Cursor's client assembles it
    assert t1["result"] == expected_reply("What is 2+2?")
    # the second turn used the saved checkpoint: the emulator fetched turn 1 from the SDK's blob store
    assert t2["result"] == expected_reply("And 3+3?", earlier=2, first="What is 2+2?", turns=1)
    # usage from turn_ended reached the SDK unchanged
    assert [r.transport for r in runs] == [transport, transport]
    for turn, run in zip((t1, t2), runs, strict=True):
        assert run.outcome == "completed"
        assert turn["usage"]["input_tokens"] == run.usage["input_tokens"] > 0
        assert turn["usage"]["output_tokens"] == run.usage["output_tokens"] > 0
        assert turn["usage"]["reasoning_tokens"] == run.usage["reasoning_tokens"]
    first_req, second_req = runs[0].run_request, runs[1].run_request
    assert first_req is not None and second_req is not None
    assert len(first_req.conversation_state.turns) == 0
    assert len(second_req.conversation_state.turns) == 1
    assert first_req.conversation_id == second_req.conversation_id
    assert first_req.requested_model.model_id == "composer-2"
    # the SDK answered the request-context exec and every KV request
    for run in runs:
        assert any(m.exec_client_message.HasField("request_context_result") for m in run.exec_answers)
        assert all(kv.WhichOneof("message") for kv in run.kv_answers)
        # tools=[] is sent as an empty allowed-tools header (connect.md §4.2)
        assert run.headers.get("x-cursor-agent-allowed-tools") == ""
    if transport == "run":
        assert "/aiserver.v1.ServerConfigService/GetServerConfig" in paths
        assert "/agent.v1.AgentService/RunSSE" not in paths
    else:
        assert "/agent.v1.AgentService/Run" not in paths
        assert "/aiserver.v1.BidiService/BidiAppend" in paths
