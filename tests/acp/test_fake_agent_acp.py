"""The fake ``agent acp`` driven raw over its stdio, checked against acp.md."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cursorpipe.testing.fake_agent.acp import (
    ENV_SESSION_FAILURES,
    PERMISSION_MARKER,
    PLAN_MARKER,
    permission_note,
)
from cursorpipe.testing.fake_agent.catalog import (
    AUTH_REQUIRED_ACP_MESSAGE,
    ENV_ACCOUNT,
    ENV_LATENCY,
    ENV_STATE_DIR,
    MODELS,
    acp_model_ids,
    expected_reply,
    expected_thinking,
)


class Raw:
    """A bare JSON-RPC peer on the fake agent's pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 100

    async def send(self, obj: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        data = obj if isinstance(obj, bytes) else json.dumps({"jsonrpc": "2.0", **obj}).encode() + b"\n"
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, "fake agent closed stdout"
        return json.loads(line)

    async def call(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send a request; return its answer and every message that came before it."""
        self.next_id += 1
        ident = self.next_id
        await self.send({"id": ident, "method": method, "params": params})
        before: list[dict[str, Any]] = []
        while True:
            msg = await self.recv()
            if msg.get("id") == ident and "method" not in msg:
                return msg, before
            before.append(msg)

    async def new_session(self) -> str:
        answer, _ = await self.call("session/new", {"cwd": "/tmp", "mcpServers": []})
        return str(answer["result"]["sessionId"])


@pytest.fixture
async def spawn(agent_bin: str) -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*extra: str, env: dict[str, str] | None = None) -> Raw:
        full = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_AGENT_")}
        full.pop("CURSOR_API_KEY", None)
        full.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            agent_bin,
            *extra,
            "acp",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full,
        )
        procs.append(proc)
        return Raw(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_initialize_matches_cursor_and_answers_version_1(spawn: Any) -> None:
    raw = await spawn()
    answer, _ = await raw.call("initialize", {"protocolVersion": 99, "clientCapabilities": {}})
    result = answer["result"]
    assert result["protocolVersion"] == 1
    assert result["authMethods"][0]["id"] == "cursor_login"
    assert result["agentCapabilities"]["promptCapabilities"] == {
        "audio": False,
        "embeddedContext": False,
        "image": True,
    }
    again, _ = await raw.call("initialize", {"protocolVersion": 1})
    assert again["result"] == result


async def test_malformed_lines_get_no_answer(spawn: Any) -> None:
    raw = await spawn()
    await raw.send(b"this is not json\n")
    await raw.send(b'{"jsonrpc":"2.0","id":\n')
    answer, before = await raw.call("initialize", {"protocolVersion": 1})
    assert before == [] and "result" in answer
    assert raw.proc.stderr is not None
    raw.proc.stdin.close()  # type: ignore[union-attr]
    assert await asyncio.wait_for(raw.proc.wait(), 5) == 0
    assert await raw.proc.stderr.read() == b""


async def test_logged_out_needs_auth_and_browser_login_fails(spawn: Any) -> None:
    raw = await spawn(env={ENV_ACCOUNT: "logged_out"})
    answer, _ = await raw.call("session/new", {"cwd": "/tmp", "mcpServers": []})
    assert answer["error"]["code"] == -32000
    assert answer["error"]["data"]["message"] == AUTH_REQUIRED_ACP_MESSAGE
    answer, _ = await raw.call("authenticate", {"methodId": "cursor_login"})
    assert answer["error"]["code"] == -32602
    assert "Failed to open browser" in answer["error"]["data"]["message"]
    answer, _ = await raw.call("authenticate", {"methodId": "github"})
    assert "Unknown authentication method: github" in answer["error"]["data"]["message"]


async def test_api_key_in_env_authenticates_the_process(spawn: Any) -> None:
    raw = await spawn(env={ENV_ACCOUNT: "logged_out", "CURSOR_API_KEY": "crsr_fake_key_0001"})
    assert await raw.new_session()


async def test_stored_login_authenticate_returns_empty(spawn: Any) -> None:
    raw = await spawn()
    answer, _ = await raw.call("authenticate", {"methodId": "cursor_login"})
    assert answer["result"] == {}


async def test_session_new_requires_cwd_and_mcp_servers(spawn: Any) -> None:
    raw = await spawn()
    answer, _ = await raw.call("session/new", {"cwd": "/tmp"})
    assert answer["error"]["code"] == -32603
    assert isinstance(answer["error"]["data"], list)
    assert answer["error"]["data"][0]["path"] == ["mcpServers"]


async def test_session_new_shape_and_bracketed_ids(spawn: Any) -> None:
    raw = await spawn()
    answer, _ = await raw.call("session/new", {"cwd": "/tmp", "mcpServers": []})
    result = answer["result"]
    assert set(result) == {"sessionId", "modes", "models", "configOptions"}
    assert result["modes"]["currentModeId"] == "agent"
    assert result["models"]["currentModelId"] == "default[]"
    model_opt = next(o for o in result["configOptions"] if o["id"] == "model")
    assert [o["value"] for o in model_opt["options"]] == acp_model_ids()
    follow = await raw.recv()
    assert follow["params"]["update"]["sessionUpdate"] == "available_commands_update"


async def test_parameterized_picker_gives_bare_ids(spawn: Any) -> None:
    raw = await spawn()
    await raw.call(
        "initialize",
        {"protocolVersion": 1, "clientCapabilities": {"_meta": {"parameterizedModelPicker": True}}},
    )
    answer, _ = await raw.call("session/new", {"cwd": "/tmp", "mcpServers": []})
    assert [m["modelId"] for m in answer["result"]["models"]["availableModels"]] == acp_model_ids(
        parameterized=True
    )


async def test_model_and_mode_switching(spawn: Any) -> None:
    raw = await spawn()
    sid = await raw.new_session()
    bad, _ = await raw.call(
        "session/set_config_option", {"sessionId": sid, "configId": "model", "value": "gpt-5"}
    )
    assert bad["error"]["code"] == -32602
    assert "Invalid model value: gpt-5" in bad["error"]["data"]["message"]
    acp_id = MODELS[4].acp_id
    good, _ = await raw.call(
        "session/set_config_option", {"sessionId": sid, "configId": "model", "value": acp_id}
    )
    model_opt = next(o for o in good["result"]["configOptions"] if o["id"] == "model")
    assert model_opt["currentValue"] == acp_id
    legacy, _ = await raw.call("session/set_model", {"sessionId": sid, "modelId": "auto"})
    assert legacy["error"]["code"] == -32602
    mode_bad, _ = await raw.call("session/set_mode", {"sessionId": sid, "modeId": "yolo"})
    assert mode_bad["error"]["code"] == -32603
    assert "Valid modes: agent, plan, ask" in mode_bad["error"]["data"]["details"]
    mode_ok, before = await raw.call("session/set_mode", {"sessionId": sid, "modeId": "ask"})
    assert mode_ok["result"] == {}
    assert any(
        m["params"]["update"] == {"sessionUpdate": "current_mode_update", "currentModeId": "ask"}
        for m in before
    )


async def test_prompt_streams_thoughts_then_text_then_end_turn(spawn: Any) -> None:
    raw = await spawn()
    sid = await raw.new_session()
    answer, before = await raw.call(
        "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "hi"}]}
    )
    assert answer["result"] == {"stopReason": "end_turn"}
    kinds = [m["params"]["update"]["sessionUpdate"] for m in before if m.get("method") == "session/update"]
    assert "agent_thought_chunk" in kinds and "agent_message_chunk" in kinds
    assert kinds.index("agent_thought_chunk") < kinds.index("agent_message_chunk")
    updates = [m["params"]["update"] for m in before if m.get("method") == "session/update"]
    text = "".join(u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_message_chunk")
    thought = "".join(u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_thought_chunk")
    assert text == expected_reply("hi")
    assert thought == expected_thinking("hi")
    answer, before = await raw.call(
        "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "again"}]}
    )
    text = "".join(
        m["params"]["update"]["content"]["text"]
        for m in before
        if m["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
    )
    assert text == expected_reply("again", ["hi"])


async def test_permission_request_has_three_options_and_is_honoured(spawn: Any) -> None:
    raw = await spawn()
    sid = await raw.new_session()
    await raw.send(
        {
            "id": 1,
            "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": PERMISSION_MARKER}]},
        }
    )
    while True:
        msg = await raw.recv()
        if msg.get("method") == "session/request_permission":
            break
    assert [o["kind"] for o in msg["params"]["options"]] == ["allow_once", "allow_always", "reject_once"]
    assert "\n" in msg["params"]["toolCall"]["toolCallId"]
    await raw.send(
        {"id": msg["id"], "result": {"outcome": {"outcome": "selected", "optionId": "reject-once"}}}
    )
    text = ""
    statuses = []
    while True:
        msg = await raw.recv()
        if msg.get("id") == 1:
            break
        update = msg["params"]["update"]
        if update["sessionUpdate"] == "agent_message_chunk":
            text += update["content"]["text"]
        if update["sessionUpdate"] == "tool_call_update":
            statuses.append(update["status"])
    assert statuses == ["completed"]  # acp.md §4: rejected tools still say completed
    assert text == permission_note("reject-once") + expected_reply(PERMISSION_MARKER)


async def test_cursor_extension_request_blocks_until_answered(spawn: Any) -> None:
    raw = await spawn()
    sid = await raw.new_session()
    await raw.send(
        {
            "id": 1,
            "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": PLAN_MARKER}]},
        }
    )
    while True:
        msg = await raw.recv()
        if msg.get("method") == "cursor/create_plan":
            break
    with pytest.raises(TimeoutError):
        await raw.recv(timeout=0.3)
    await raw.send({"id": msg["id"], "error": {"code": -32601, "message": "Method not found"}})
    kinds = []
    extensions = []
    while True:
        msg = await raw.recv()
        if msg.get("id") == 1 and "method" not in msg:
            break
        if msg.get("method") == "session/update":
            kinds.append(msg["params"]["update"]["sessionUpdate"])
        else:
            extensions.append(msg["method"])
    assert msg["result"]["stopReason"] == "end_turn"
    assert "plan" in kinds
    assert extensions == ["cursor/update_todos"]  # sent, and the turn did not wait for it


async def test_cancel_is_a_notification(spawn: Any) -> None:
    raw = await spawn(env={ENV_LATENCY: "0.05"})
    sid = await raw.new_session()
    bad, _ = await raw.call("session/cancel", {"sessionId": sid})
    assert bad["error"]["code"] == -32601
    await raw.send(
        {
            "id": 1,
            "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "long"}]},
        }
    )
    await raw.recv()
    await raw.send({"method": "session/cancel", "params": {"sessionId": sid}})
    while True:
        msg = await raw.recv()
        if msg.get("id") == 1:
            break
    assert msg["result"] == {"stopReason": "cancelled"}


async def test_transient_session_services_failure(spawn: Any) -> None:
    raw = await spawn(env={ENV_SESSION_FAILURES: "1"})
    first, _ = await raw.call("session/new", {"cwd": "/tmp", "mcpServers": []})
    assert first["error"]["code"] == -32603
    assert first["error"]["data"]["message"] == "Failed to initialize session services"
    assert await raw.new_session()


async def test_concurrent_prompts_interleave(spawn: Any) -> None:
    raw = await spawn(env={ENV_LATENCY: "0.01"})
    s1, s2 = await raw.new_session(), await raw.new_session()
    for ident, sid in ((1, s1), (2, s2)):
        text = "alpha beta gamma delta epsilon" if ident == 1 else "one two three four five"
        await raw.send(
            {
                "id": ident,
                "method": "session/prompt",
                "params": {"sessionId": sid, "prompt": [{"type": "text", "text": text}]},
            }
        )
    order: list[str] = []
    done = 0
    while done < 2:
        msg = await raw.recv()
        if "id" in msg and "method" not in msg:
            done += 1
            continue
        if (
            msg.get("method") == "session/update"
            and msg["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
        ):
            order.append(msg["params"]["sessionId"])
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches >= 3


async def test_session_load_replays_history_from_the_store(spawn: Any, tmp_path: Any) -> None:
    env = {ENV_STATE_DIR: str(tmp_path)}
    first = await spawn(env=env)
    sid = await first.new_session()
    await first.call(
        "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "remember me"}]}
    )
    second = await spawn(env=env)
    missing, _ = await second.call("session/load", {"sessionId": "nope", "cwd": "/tmp", "mcpServers": []})
    assert (
        missing["error"]["code"] == -32602
        and 'Session "nope" not found' in missing["error"]["data"]["message"]
    )
    answer, before = await second.call("session/load", {"sessionId": sid, "cwd": "/tmp", "mcpServers": []})
    assert "sessionId" not in answer["result"] and "configOptions" in answer["result"]
    replay = [
        (m["params"]["update"]["sessionUpdate"], m["params"]["update"]["content"]["text"]) for m in before
    ]
    assert replay == [
        ("user_message_chunk", "remember me"),
        ("agent_message_chunk", expected_reply("remember me")),
    ]
    answer, _ = await second.call(
        "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "again"}]}
    )
    assert answer["result"]["stopReason"] == "end_turn"
