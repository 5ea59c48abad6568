"""The `cursorpipe` command (doctor, models, chat, serve) and `cursorpipe-server`'s flags and
safe-bind rules, run in-process against the emulator and the fake agent."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys

import pytest
from cursorpipe import cli
from cursorpipe.errors import ConfigurationError
from cursorpipe.server import cli as server_cli
from cursorpipe.testing.emulator import Emulator, expected_reply
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import expected_reply as fake_reply

ALL_INTERFACES = "0.0.0.0"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_help_lists_commands_and_server_flags(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("doctor", "models", "chat", "serve"):
        assert command in out
    with pytest.raises(SystemExit):
        server_cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--pool-size",
        "--strategy",
        "--emulator",
        "--allow-insecure-bind",
        "--strict-params",
        "--log-level",
        "--bearer-token-env",
        "--max-concurrency",
        "--queue-timeout",
        "--request-timeout",
        "--session-idle",
        "--cors-origins",
        "--drain-timeout",
        "--keepalive",
    ):
        assert flag in out
    assert "--bearer-token " not in out  # secrets never on argv


def test_flags_map_onto_config_and_secrets_come_from_env(monkeypatch) -> None:
    parser = server_cli.build_parser()
    args = parser.parse_args(
        [
            "--port",
            "9999",
            "--pool-size",
            "2",
            "--strategy",
            "acp",
            "--strict-params",
            "--queue-timeout",
            "0.5",
            "--log-level",
            "debug",
            "--cors-origins",
            "https://a",
        ]
    )
    config = server_cli.config_from_args(args)
    assert (config.port, config.pool_size, config.strategy.value) == (9999, 2, "acp")
    assert config.strict_params is True and config.queue_timeout_s == 0.5
    assert config.log_level == "debug" and config.cors_origins == "https://a"
    assert config.host == "127.0.0.1"  # safe default
    monkeypatch.setenv("MY_TOKEN", "from-the-env-123")
    config = server_cli.config_from_args(parser.parse_args(["--bearer-token-env", "MY_TOKEN"]))
    assert config.bearer_token.get_secret_value() == "from-the-env-123"
    with pytest.raises(ConfigurationError, match="UNSET_VAR"):
        server_cli.config_from_args(parser.parse_args(["--bearer-token-env", "UNSET_VAR"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--bearer-token", "x"])
    monkeypatch.setenv("CURSORPIPE_HOST", "10.1.2.3")
    assert server_cli.config_from_args(parser.parse_args([])).host == "10.1.2.3"


def test_non_loopback_bind_refused_without_token(monkeypatch, capsys) -> None:
    assert server_cli.main(["--host", ALL_INTERFACES]) == 2
    err = capsys.readouterr().err
    assert "CURSORPIPE_BEARER_TOKEN" in err and "--allow-insecure-bind" in err
    assert cli.main(["serve", "--host", "192.168.1.5"]) == 2  # `cursorpipe serve` is the same command
    assert "Refusing" in capsys.readouterr().err
    parser = server_cli.build_parser()
    assert server_cli.check_bind(server_cli.config_from_args(parser.parse_args(["--host", "::1"]))) is None
    assert (
        server_cli.check_bind(server_cli.config_from_args(parser.parse_args(["--host", "localhost"]))) is None
    )
    ok = server_cli.config_from_args(parser.parse_args(["--host", ALL_INTERFACES, "--allow-insecure-bind"]))
    assert server_cli.check_bind(ok) is None
    monkeypatch.setenv("CURSORPIPE_BEARER_TOKEN", "a-long-secret-token")
    assert (
        server_cli.check_bind(server_cli.config_from_args(parser.parse_args(["--host", ALL_INTERFACES])))
        is None
    )


def test_chat_streams_answer_with_thinking_and_usage_on_stderr(capsys) -> None:
    assert cli.main(["chat", "--emulator", "hello", "there"]) == 0
    captured = capsys.readouterr()
    assert captured.out == expected_reply("hello there") + "\n"
    assert "[thinking] " in captured.err
    assert "[usage] " in captured.err and " out / " in captured.err
    assert "model composer-2" in captured.err  # the model Cursor routed "auto" to
    assert "EMULATED" in captured.err


def test_chat_reads_stdin_and_hides_thinking_on_request(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\n"))
    assert cli.main(["chat", "--emulator", "--no-thinking"]) == 0
    captured = capsys.readouterr()
    assert captured.out == expected_reply("from stdin") + "\n"
    assert "[thinking]" not in captured.err


def test_interactive_chat_keeps_history(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTTY("first\nsecond\n/exit\n"))
    assert cli.main(["chat", "--emulator"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [expected_reply("first"), expected_reply("second", earlier=2, first="first", turns=1)]


def test_chat_through_the_fake_agent(capsys, monkeypatch) -> None:
    monkeypatch.setenv("CURSORPIPE_AGENT_BIN", executable())
    assert cli.main(["chat", "--strategy", "subprocess", "ping"]) == 0
    assert capsys.readouterr().out == fake_reply("ping") + "\n"


def test_models_json_and_table(capsys) -> None:
    assert cli.main(["models", "--emulator", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "auto" in [m["id"] for m in data]
    assert cli.main(["models", "--emulator"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("auto")


def test_chat_error_is_a_clear_message_not_a_traceback(capsys, monkeypatch) -> None:
    monkeypatch.setenv("CURSORPIPE_AGENT_BIN", "/nonexistent/agent")
    assert cli.main(["chat", "--strategy", "subprocess", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cursorpipe chat: ") and "Traceback" not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_without_anything_says_what_to_fix(capsys, monkeypatch) -> None:
    monkeypatch.setenv("CURSOR_BACKEND_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CURSORPIPE_AGENT_BIN", "/nonexistent/agent")
    assert cli.main(["doctor", "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  credentials" in out and "CURSOR_API_KEY" in out and "agent login" in out
    assert "FAIL  backend" in out and "HTTPS_PROXY" in out
    assert "agent binary" in out and "cursor.com/install" in out


def test_doctor_all_good_against_emulator_and_fake_agent(capsys, monkeypatch) -> None:
    with Emulator.start_in_thread() as emu:
        monkeypatch.setenv("CURSOR_BACKEND_URL", emu.url)
        monkeypatch.setenv("CURSOR_API_KEY", emu.api_key)
        monkeypatch.setenv("CURSORPIPE_AGENT_BIN", executable())
        assert cli.main(["doctor", "--timeout", "5"]) == 0
        out = capsys.readouterr().out
        assert "ok    credentials: api key from" in out
        assert "ok    token" in out and "ok    backend" in out and "ok    agent binary" in out
        assert emu.api_key not in out
        monkeypatch.setenv("CURSOR_API_KEY", "crsr_wrong_key_123456")
        assert cli.main(["doctor", "--timeout", "5"]) == 1
        out = capsys.readouterr().out
        assert "FAIL  token" in out and "crsr_wrong_key_123456" not in out


def test_doctor_emulator_is_all_good_offline_whatever_the_environment(capsys, monkeypatch) -> None:
    # A wrong key and an unreachable backend in the environment: --emulator ignores both.
    monkeypatch.setenv("CURSOR_BACKEND_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CURSOR_API_KEY", "crsr_wrong_key_123456")
    assert cli.main(["doctor", "--emulator", "--timeout", "5"]) == 0
    captured = capsys.readouterr()
    assert "ok    token: accepted" in captured.out and "all good" in captured.out
    assert "EMULATED backend" in captured.err
    assert cli.main(["doctor", "--emulator", "--live"]) == 2  # --live means real Cursor
    assert "drop --emulator" in capsys.readouterr().err


def test_server_import_without_the_extra_names_the_install_command() -> None:
    code = "import sys; sys.modules['fastapi'] = None\nimport cursorpipe.server"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "pip install 'cursorpipe[server]'" in proc.stderr
