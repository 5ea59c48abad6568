"""Unit tests of the subprocess transport's sans-IO pieces: models output, prompts, error mapping."""

from __future__ import annotations

import pytest
from cursorpipe import (
    AgentCrashError,
    AuthenticationError,
    ChatMessage,
    ConfigurationError,
    ImagePart,
    ModelNotFoundError,
    NetworkError,
    RateLimitError,
    SessionError,
    UsageLimitError,
)
from cursorpipe._redact import register_secret
from cursorpipe.testing.fake_agent import catalog as cat
from cursorpipe.transports.subprocess._errors import classify_failure, classify_text
from cursorpipe.transports.subprocess._models import parse_models_output
from cursorpipe.transports.subprocess._prompt import ARGV_PROMPT_MAX_BYTES, flatten_messages, prompt_argv

MODELS_TEXT = """\x1b[1mAvailable models\x1b[0m

auto - Auto \x1b[2m(current)\x1b[0m
composer-2 - Composer 2 (default)
gpt-5.3-codex[reasoning=high] - GPT-5.3 Codex High
claude-4.6-sonnet-medium-thinking - Claude 4.6 Sonnet (Medium Thinking)
auto - Auto

Tip: use --model <id> to switch.
"""


def test_models_output_skips_header_blank_and_tip_lines() -> None:
    listing = parse_models_output(MODELS_TEXT)
    assert [m.id for m in listing.models] == [
        "auto",
        "composer-2",
        "gpt-5.3-codex[reasoning=high]",
        "claude-4.6-sonnet-medium-thinking",
    ]
    assert listing.models[0].display_name == "Auto" and listing.models[0].matches("default")
    assert listing.models[3].display_name == "Claude 4.6 Sonnet (Medium Thinking)"
    assert listing.current == "auto" and listing.default == "composer-2"
    assert listing.error_lines == [] and listing.ignored_lines == []


def test_models_output_reports_error_lines() -> None:
    listing = parse_models_output(cat.AUTH_REQUIRED_TEXT + "\n")
    assert listing.models == [] and listing.error_lines == [cat.AUTH_REQUIRED_TEXT]
    assert isinstance(classify_text(listing.error_lines[0]), AuthenticationError)
    odd = parse_models_output("Loading…\nsomething else\n")
    assert odd.models == [] and odd.ignored_lines == ["Loading…", "something else"]


def test_flatten_single_message_is_unchanged() -> None:
    assert flatten_messages([ChatMessage.of("user", "just this")]) == "just this"


def test_flatten_history_and_system() -> None:
    msgs = [
        ChatMessage.of("system", "be brief"),
        ChatMessage.of("user", "first"),
        ChatMessage.of("assistant", "answer one"),
        ChatMessage.of("user", "second"),
    ]
    text = flatten_messages(msgs)
    assert text.startswith("<system_instructions>\nbe brief\n</system_instructions>")
    assert "User: first" in text and "Assistant: answer one" in text
    assert text.endswith("\n\nsecond")
    assert text.index("be brief") < text.index("first") < text.index("answer one") < text.index("second")
    tail = flatten_messages([ChatMessage.of("user", "q"), ChatMessage.of("assistant", "partial")])
    assert tail.endswith("Continue the conversation as the assistant.")


def test_flatten_rejects_images() -> None:
    msg = ChatMessage(role="user", content=(ImagePart(data=b"x"),))
    with pytest.raises(ConfigurationError, match="images"):
        flatten_messages([msg])


def test_prompt_argv_uses_double_dash_or_stdin() -> None:
    assert prompt_argv("-rf /") == (["--", "-rf /"], None)
    big = "x" * (ARGV_PROMPT_MAX_BYTES + 1)
    assert prompt_argv(big) == ([], big.encode())
    assert prompt_argv("nul\x00byte")[1] == b"nul\x00byte"
    assert prompt_argv("lone \ud800")[1] == b"lone ?"


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        (cat.AUTH_REQUIRED_TEXT, AuthenticationError),
        (cat.INVALID_API_KEY_TEXT, AuthenticationError),
        (cat.usage_limit_text(), UsageLimitError),
        (cat.INBAND_ERRORS["usage_limit"], UsageLimitError),
        (cat.RATE_LIMIT_TEXT, RateLimitError),
        (cat.INBAND_ERRORS["resource_exhausted"], RateLimitError),
        (cat.NETWORK_ERROR_TEXT, NetworkError),
        ("T: [internal] unable to get local issuer certificate", NetworkError),
        ("Error: Chat not found: abc", SessionError),
    ],
)
def test_classify_text(text: str, cls: type) -> None:
    err = classify_text(text)
    assert type(err) is cls
    assert err is not None and err.transport == "subprocess"


def test_classify_model_errors_keep_the_model_and_the_list() -> None:
    err = classify_text(cat.unknown_model_text("gpt-99"))
    assert isinstance(err, ModelNotFoundError)
    assert err.model == "gpt-99" and "auto" in err.available and "gemini-3.8-flash" in err.available
    inband = classify_text(cat.INBAND_ERRORS["model_not_found"].replace("{model}", "claude-opus-4-7"))
    assert isinstance(inband, ModelNotFoundError) and inband.model == "claude-opus-4-7"
    assert not isinstance(UsageLimitError("x"), ModelNotFoundError)
    assert UsageLimitError("x").retryable is False and RateLimitError("x").retryable is True


def test_unknown_failure_is_a_crash_with_redacted_tail() -> None:
    register_secret("supersecretvalue99")
    err = classify_failure(exit_code=139, stderr="segfault\nkey supersecretvalue99 crsr_abcdefgh12")
    assert isinstance(err, AgentCrashError) and err.exit_code == 139
    assert "supersecretvalue99" not in err.stderr and "crsr_abcdefgh12" not in err.stderr
    assert "supersecretvalue99" not in str(err) and "code 139" in str(err)
    killed = classify_failure(exit_code=-9, stderr="")
    assert isinstance(killed, AgentCrashError) and "signal 9" in str(killed)
    assert classify_text("") is None and classify_text("all good") is None


def test_redaction_keeps_hints_readable_and_still_masks_values() -> None:
    from cursorpipe._redact import redact

    hint = "Missing or wrong bearer token: send 'Authorization: Bearer <CURSORPIPE_BEARER_TOKEN>'."
    assert redact(hint) == hint
    assert redact("authorization: Bearer abcdefgh12345678") == "authorization: Bearer [REDACTED]"
    assert redact("Authorization: sekrit-value-123") == "Authorization: [REDACTED]"
    assert redact('{"api_key": "zzzzzzzz9"}') == '{"api_key": "[REDACTED]"}'
    assert redact("access_token=abcdef123456&x=1") == "access_token=[REDACTED]"
