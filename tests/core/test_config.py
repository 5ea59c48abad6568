from __future__ import annotations

from pathlib import Path

import pytest
from cursorpipe import ConfigurationError, CursorPipeConfig, Strategy
from cursorpipe.config import DEFAULT_BACKEND_URL, DEFAULT_REST_URL
from pydantic import SecretStr


def test_defaults() -> None:
    cfg = CursorPipeConfig()
    assert cfg.agent_bin == "agent"
    assert cfg.strategy is Strategy.AUTO
    assert cfg.default_mode == "ask"
    assert cfg.request_timeout_s == 300
    assert cfg.acp_startup_timeout_s == 30
    assert cfg.acp_max_restarts == 3
    assert cfg.workspace == ""
    assert cfg.api_key.get_secret_value() == ""
    assert cfg.enable_profiling is False
    assert cfg.backend_url == DEFAULT_BACKEND_URL
    assert cfg.host == "127.0.0.1"
    assert cfg.port == 8080
    assert cfg.pool_size == 5
    assert cfg.bearer_token.get_secret_value() == ""
    assert cfg.effective_rest_url == DEFAULT_REST_URL


def test_reads_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSORPIPE_STRATEGY", "ACP")
    monkeypatch.setenv("CURSORPIPE_PORT", "9000")
    monkeypatch.setenv("CURSORPIPE_DEFAULT_MODE", "plan")
    monkeypatch.setenv("CURSORPIPE_ENABLE_PROFILING", "true")
    cfg = CursorPipeConfig()
    assert cfg.strategy is Strategy.ACP
    assert cfg.port == 9000
    assert cfg.default_mode == "plan"
    assert cfg.enable_profiling is True


def test_cursor_names_are_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSOR_API_KEY", "crsr_test_key_1")
    monkeypatch.setenv("CURSOR_BACKEND_URL", "http://127.0.0.1:5555/")
    cfg = CursorPipeConfig()
    assert cfg.api_key.get_secret_value() == "crsr_test_key_1"
    assert cfg.backend_url == "http://127.0.0.1:5555"
    # Overriding the backend moves REST calls there too (as Cursor's SDK does).
    assert cfg.effective_rest_url == "http://127.0.0.1:5555"
    assert cfg.has_credentials


def test_prefixed_name_beats_nothing_and_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSORPIPE_API_KEY", "crsr_from_env")
    assert CursorPipeConfig().api_key.get_secret_value() == "crsr_from_env"
    assert CursorPipeConfig(api_key="crsr_arg").api_key.get_secret_value() == "crsr_arg"


def test_dotenv_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("CURSORPIPE_POOL_SIZE=7\nCURSOR_API_KEY=crsr_dotenv\n")
    monkeypatch.chdir(tmp_path)
    cfg = CursorPipeConfig()
    assert cfg.pool_size == 7
    assert cfg.api_key.get_secret_value() == "crsr_dotenv"


def test_secrets_are_secret() -> None:
    cfg = CursorPipeConfig(api_key="crsr_supersecret", bearer_token="tok-secret-123")
    assert isinstance(cfg.api_key, SecretStr)
    assert "crsr_supersecret" not in repr(cfg)
    assert "tok-secret-123" not in str(cfg)


def test_agent_mode_is_rejected_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURSORPIPE_DEFAULT_MODE", "agent")
    with pytest.raises(ConfigurationError) as info:
        CursorPipeConfig()
    assert "CURSORPIPE_DEFAULT_MODE" in str(info.value)
    assert "ask" in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CURSORPIPE_STRATEGY", "carrier-pigeon"),
        ("CURSORPIPE_PORT", "99999"),
        ("CURSORPIPE_REQUEST_TIMEOUT_S", "-1"),
        ("CURSORPIPE_ACP_MAX_RESTARTS", "many"),
        ("CURSORPIPE_BACKEND_URL", "ftp://example"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        CursorPipeConfig()
    assert var in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        CursorPipeConfig(port="crsr_secret_port_value")
    assert "crsr_secret_port_value" not in str(info.value)
    assert "CURSORPIPE_PORT" in str(info.value)
