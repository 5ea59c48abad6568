"""The fake ``agent`` run as a real subprocess: print mode, models, status, about, knobs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cursorpipe.testing.fake_agent import catalog as cat
from cursorpipe.testing.fake_agent import console_script, executable

STREAM = ("-p", "--output-format", "stream-json")
PARTIAL = (*STREAM, "--stream-partial-output")


def deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "assistant" and "timestamp_ms" in e]


def text_of(event: dict[str, Any]) -> str:
    return "".join(part["text"] for part in event["message"]["content"])


def test_stream_json_partial_output_shape(run_agent: Any) -> None:
    ran = run_agent(*PARTIAL, "--model", "auto", "--", "hello there")
    assert ran.code == 0, ran.stderr
    events = ran.events()
    reply = cat.expected_reply("hello there")
    init, user = events[0], events[1]
    assert init["type"] == "system" and init["subtype"] == "init"
    assert init["apiKeySource"] == "login" and init["model"] == "Auto" and init["permissionMode"] == "default"
    sid = init["session_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", sid)
    assert user["message"]["content"][0]["text"] == "hello there"
    assert all(e["session_id"] == sid for e in events)
    # thinking first (auto is a thinking model), then deltas
    kinds = [e["type"] for e in events]
    assert kinds.index("thinking") < kinds.index("assistant")
    thinking = "".join(e.get("text", "") for e in events if e["type"] == "thinking")
    assert thinking == cat.expected_thinking("hello there")
    # acp.md §6.3: a delta repeated with model_call_id, then the cumulative message without timestamp
    dups = [e for e in deltas(events) if "model_call_id" in e]
    assert len(dups) >= 1
    unique = [text_of(e) for e in deltas(events) if "model_call_id" not in e]
    assert "".join(unique) == reply
    assert "".join(text_of(e) for e in deltas(events)) != reply  # naive concatenation duplicates
    final = [e for e in events if e["type"] == "assistant" and "timestamp_ms" not in e]
    assert [text_of(e) for e in final] == [reply]
    result = events[-1]
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == reply and result["session_id"] == sid
    assert result["usage"] == cat.usage_for("hello there", reply)
    assert set(result["usage"]) == {"inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens"}


def test_stream_json_without_partial_output_has_one_message(run_agent: Any) -> None:
    ran = run_agent(*STREAM, "--model", "composer-2", "--", "plain")
    assert ran.code == 0
    events = ran.events()
    assistant = [e for e in events if e["type"] == "assistant"]
    assert [text_of(e) for e in assistant] == [cat.expected_reply("plain")]
    assert "timestamp_ms" not in assistant[0]
    assert not [e for e in events if e["type"] == "thinking"]  # composer-2 does not think


def test_json_and_text_output(run_agent: Any) -> None:
    ran = run_agent("-p", "--output-format", "json", "--", "as json")
    assert ran.code == 0
    (obj,) = ran.events()
    assert obj["type"] == "result" and obj["result"] == cat.expected_reply("as json")
    ran = run_agent("-p", "--", "as text")  # acp.md §3.3: default format is text
    assert ran.stdout == cat.expected_reply("as text") + "\n"


def test_prompt_from_stdin_and_stdin_ignored_next_to_positional(run_agent: Any) -> None:
    ran = run_agent("-p", "--output-format", "json", stdin="from stdin")
    assert json.loads(ran.stdout)["result"] == cat.expected_reply("from stdin")
    ran = run_agent("-p", "--output-format", "json", "--", "positional", stdin="IGNORED")
    assert json.loads(ran.stdout)["result"] == cat.expected_reply("positional")


def test_dash_prompt_needs_double_dash(run_agent: Any) -> None:
    ran = run_agent("-p", "-rf everything")
    assert ran.code == 1 and "unknown option '-rf everything'" in ran.stderr and not ran.stdout
    ran = run_agent("-p", "--output-format", "json", "--", "-rf everything")
    assert json.loads(ran.stdout)["result"] == cat.expected_reply("-rf everything")
    # a subcommand name after `--` is a prompt, not a command
    ran = run_agent("-p", "--output-format", "json", "--", "models")
    assert json.loads(ran.stdout)["result"] == cat.expected_reply("models")


def test_mode_flag_rejects_agent(run_agent: Any) -> None:
    ran = run_agent("-p", "--mode", "agent", "--", "x")
    assert ran.code == 1
    assert "argument 'agent' is invalid. Allowed choices are plan, ask." in ran.stderr
    assert run_agent("-p", "--mode", "plan", "--", "x").code == 0
    assert run_agent("-p", "--output-format", "xml", "--", "x").code == 1


def test_resume_continues_the_conversation(run_agent: Any) -> None:
    first = run_agent("-p", "--output-format", "json", "--", "my name is Ada")
    sid = json.loads(first.stdout)["session_id"]
    second = run_agent("-p", "--output-format", "json", "--resume", sid, "--", "what is my name?")
    obj = json.loads(second.stdout)
    assert obj["session_id"] == sid
    assert obj["result"] == cat.expected_reply("what is my name?", ["my name is Ada"])
    assert obj["usage"]["cacheReadTokens"] > 0
    # a new chat has no history
    fresh = run_agent("-p", "--output-format", "json", "--", "what is my name?")
    assert json.loads(fresh.stdout)["result"] == cat.expected_reply("what is my name?")


def test_resume_unknown_chat_and_create_chat(run_agent: Any) -> None:
    ran = run_agent("-p", "--resume", "00000000-0000-4000-8000-000000000000", "--", "x")
    assert ran.code == 1 and "Chat not found" in ran.stderr
    created = run_agent("create-chat")
    chat_id = created.stdout.strip()
    assert created.code == 0 and re.fullmatch(r"[0-9a-f-]{36}", chat_id)
    ran = run_agent("-p", "--output-format", "json", "--resume", chat_id, "--", "first")
    obj = json.loads(ran.stdout)
    assert obj["session_id"] == chat_id and obj["result"] == cat.expected_reply("first")


def test_auth_states(run_agent: Any) -> None:
    logged_out = {cat.ENV_ACCOUNT: "logged_out"}
    ran = run_agent("-p", "--", "x", env=logged_out)
    assert (ran.code, ran.stdout, ran.stderr.strip()) == (1, "", cat.AUTH_REQUIRED_TEXT)
    ran = run_agent(*STREAM, "--", "x", env={**logged_out, "CURSOR_API_KEY": "crsr_fake_key_123"})
    assert ran.code == 0 and ran.events()[0]["apiKeySource"] == "env"
    ran = run_agent(*STREAM, "--", "x", env={**logged_out, "CURSOR_AUTH_TOKEN": "tok_abcdef"})
    assert ran.code == 0
    bad = {cat.ENV_EXPECT_API_KEY: "crsr_right_key", "CURSOR_API_KEY": "crsr_wrong_key"}
    ran = run_agent("-p", "--", "x", env=bad)
    assert ran.code == 1 and cat.INVALID_API_KEY_TEXT in ran.stderr and cat.AUTH_REQUIRED_TEXT in ran.stderr


def test_usage_and_rate_limit_and_network(run_agent: Any) -> None:
    ran = run_agent(*STREAM, "--", "x", env={cat.ENV_ACCOUNT: "usage_limit"})
    assert ran.code == 1 and ran.stderr.startswith("Error: You've hit your usage limit")
    assert "spendLimits: [50,100,200]" in ran.stderr
    assert [e["type"] for e in ran.events()] == ["system", "user"]  # no result on failure
    ran = run_agent(*STREAM, "--", "x", env={cat.ENV_ACCOUNT: "rate_limited"})
    assert ran.code == 1 and ran.stderr.strip() == cat.RATE_LIMIT_TEXT
    ran = run_agent(*STREAM, "--", "x", env={cat.ENV_NETWORK_ERROR: "1"})
    assert ran.code == 1 and ran.stderr.strip() == cat.NETWORK_ERROR_TEXT


def test_unknown_and_unroutable_models(run_agent: Any) -> None:
    for bad in ("gpt-99", "default[]", "claude-opus-4-7"):
        ran = run_agent("-p", "--model", bad, "--", "x")
        assert ran.code == 1 and ran.stderr.strip() == cat.unknown_model_text(bad)
    # acp.md §3.3: bracket overrides of a listed id are accepted
    assert run_agent("-p", "--model", "gpt-5[reasoning=low]", "--", "x").code == 0


def test_inband_error_is_text_with_success_result(run_agent: Any) -> None:
    ran = run_agent(*PARTIAL, "--", "x", env={cat.ENV_INBAND_ERROR: "resource_exhausted"})
    assert ran.code == 0
    result = ran.events()[-1]
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == cat.expected_reply("x") + "\n\n" + cat.INBAND_ERRORS["resource_exhausted"]


def test_crash_mid_stream(run_agent: Any) -> None:
    env = {cat.ENV_CRASH_AFTER: "2", cat.ENV_CRASH_CODE: "3", "CURSOR_API_KEY": "crsr_crash_key_42"}
    ran = run_agent(*PARTIAL, "--model", "composer-2", "--", "crash please", env=env)
    assert ran.code == 3
    assert len(deltas(ran.events())) == 2 and ran.events()[-1]["type"] == "assistant"
    assert "FATAL" in ran.stderr and "crsr_crash_key_42" in ran.stderr  # redaction is the caller's job


def test_usage_shapes_and_tool_call(run_agent: Any) -> None:
    top = run_agent("-p", "--output-format", "json", "--", "x", env={cat.ENV_USAGE_SHAPE: "top"}).events()[0]
    assert (
        "usage" not in top
        and top["inputTokens"] == cat.usage_for("x", cat.expected_reply("x"))["inputTokens"]
    )
    none = run_agent("-p", "--output-format", "json", "--", "x", env={cat.ENV_USAGE_SHAPE: "none"}).events()[
        0
    ]
    assert "usage" not in none and "inputTokens" not in none
    ran = run_agent(*PARTIAL, "--", "tool time please", env={cat.ENV_TOOL_CALL: "1"})
    events = ran.events()
    kinds = [e["type"] for e in events]
    assert kinds.count("tool_call") == 2
    finals = [text_of(e) for e in events if e["type"] == "assistant" and "timestamp_ms" not in e]
    assert len(finals) == 2 and "".join(finals) == cat.expected_reply("tool time please")
    assert events[kinds.index("tool_call")]["tool_call"]["readToolCall"]["args"] == {"path": "README.md"}


def test_models_output(run_agent: Any) -> None:
    for args in (("models",), ("--list-models",)):
        ran = run_agent(*args)
        lines = ran.stdout.splitlines()
        assert ran.code == 0
        assert (
            lines[0] == cat.MODELS_HEADER
            and lines[1] == ""
            and lines[-2] == ""
            and lines[-1] == cat.MODELS_TIP
        )
        ids = [line.split(" - ")[0] for line in lines[2:-2]]
        assert ids == [m.cli_id for m in cat.MODELS if m.routable]
        assert "auto - Auto (current)" in lines and "composer-2 - Composer 2 (default)" in lines
    ansi = run_agent("models", env={cat.ENV_ANSI: "1"})
    assert "\x1b[" in ansi.stdout
    # acp.md §6.5 / §1.5: the auth error is printed and the exit code stays 0
    out = run_agent("models", env={cat.ENV_ACCOUNT: "logged_out"})
    assert out.code == 0 and out.stdout.strip() == cat.AUTH_REQUIRED_TEXT


def test_status_about_version(run_agent: Any) -> None:
    ok = json.loads(run_agent("status", "--format", "json").stdout)
    assert ok["isAuthenticated"] is True and ok["userInfo"]["email"] == cat.USER_EMAIL
    out = run_agent(
        "status", "--format", "json", env={cat.ENV_ACCOUNT: "logged_out", "CURSOR_API_KEY": "crsr_k1"}
    )
    data = json.loads(out.stdout)
    assert out.code == 0  # acp.md §1.5: exit 0 either way
    assert data == {
        "status": "unauthenticated",
        "isAuthenticated": False,
        "hasAccessToken": False,
        "hasRefreshToken": False,
        "message": "Not logged in",
    }
    about = json.loads(run_agent("about", "--format", "json").stdout)
    assert {"cliVersion", "model", "subscriptionTier", "osPlatform", "osArch", "userEmail"} <= set(about)
    assert run_agent("--version").stdout.strip() == cat.CLI_VERSION


def test_no_exit_after_result_and_hang(agent_bin: str) -> None:
    env = dict(os.environ, **{cat.ENV_NO_EXIT: "1"})
    with subprocess.Popen(
        [agent_bin, *PARTIAL, "--", "x"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(json.loads(line))
                if lines[-1]["type"] == "result":
                    break
            time.sleep(0.3)
            assert proc.poll() is None  # acp.md §6.6: still running after the result
        finally:
            proc.kill()
            proc.wait()
    env = dict(os.environ, **{cat.ENV_HANG_AFTER: "1"})
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            [agent_bin, *PARTIAL, "--", "x"], env=env, capture_output=True, timeout=0.8, check=False
        )


def test_acp_is_dispatched_to_the_acp_module(run_agent: Any) -> None:
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}})
    for args in (("acp",), ("--model", "gpt-5", "acp")):  # acp.md §2: global flags precede `acp`
        ran = run_agent(*args, stdin=init + "\n")
        answer = json.loads(ran.stdout.splitlines()[0])
        assert answer["id"] == 1 and answer["result"]["authMethods"][0]["id"] == "cursor_login"
    # after `--` the word is a prompt
    ran = run_agent("-p", "--output-format", "json", "--", "acp")
    assert json.loads(ran.stdout)["result"] == cat.expected_reply("acp")


def test_executable_is_fast_and_cached() -> None:
    path = executable()
    assert os.path.isabs(path) and os.access(path, os.X_OK)
    assert executable() == path
    start = time.perf_counter()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == cat.CLI_VERSION
    assert time.perf_counter() - start < 5


@pytest.mark.slow
def test_console_script_and_module_entry_points() -> None:
    script = console_script()
    assert script is not None and os.path.isabs(script)
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == cat.CLI_VERSION
    out = subprocess.run(
        [sys.executable, "-m", "cursorpipe.testing.fake_agent", "-p", "--output-format", "json", "--", "m"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["result"] == cat.expected_reply("m")


def test_executable_refuses_a_cache_dir_others_can_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fresh = executable()
    assert fresh.startswith(str(tmp_path)) and os.stat(os.path.dirname(fresh)).st_mode & 0o077 == 0
    shutil.rmtree(os.path.dirname(fresh))
    os.makedirs(os.path.dirname(fresh))
    os.chmod(os.path.dirname(fresh), 0o777)  # noqa: S103 - a directory planted by another user
    assert executable() == console_script()
