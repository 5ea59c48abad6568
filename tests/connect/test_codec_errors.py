"""ErrorDetails decoding (connect.md §8.2 real example) and the mapping to public exceptions (§8.3)."""

from __future__ import annotations

import pytest
from cursorpipe._codecs.connect import (
    ConnectError,
    ConnectErrorDetail,
    decode_error_details,
    encode_error_details,
    parse_end_stream,
)
from cursorpipe.errors import (
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    UsageLimitError,
)
from cursorpipe.transports.connect._errors import map_connect_error, parse_retry_after

# connect.md §8.2, real example from JiuZX/Cursor-To-OpenAI#42 (unpadded base64).
REAL_VALUE = "CCYSLwoVVW5hdXRob3JpemVkIHJlcXVlc3QuEhRVc2VyIGlzIHVuYXV0aG9yaXplZCAAGAE"


def _real_error() -> ConnectError:
    doc = (
        '{"error":{"code":"unauthenticated","message":"Error","details":[{"type":"aiserver.v1.ErrorDetails",'
        f'"value":"{REAL_VALUE}","debug":{{"error":"ERROR_UNAUTHORIZED"}}}}]}}}}'
    )
    end = parse_end_stream(doc.encode())
    assert end.error is not None
    return end.error


def test_real_error_details_example_decodes() -> None:
    info = decode_error_details(_real_error().details)
    assert info is not None
    assert (info.error, info.name) == (38, "UNAUTHORIZED")
    assert info.title == "Unauthorized request."
    assert info.detail == "User is unauthorized"
    assert info.is_retryable is False  # present and false (field 4 = 0)
    assert info.is_expected is True
    assert info.text == "Unauthorized request. User is unauthorized"


def test_real_error_maps_to_authentication_error() -> None:
    exc = map_connect_error(_real_error(), request_id="req-1")
    assert type(exc) is AuthenticationError
    assert exc.code == "UNAUTHORIZED"
    assert exc.message.startswith("Unauthorized request. User is unauthorized")
    assert "CURSOR_API_KEY" in exc.message  # says what to do next
    assert exc.request_id == "req-1" and exc.transport == "connect"
    assert exc.details["connect_code"] == "unauthenticated"


def test_absent_and_foreign_details() -> None:
    assert decode_error_details([]) is None
    assert decode_error_details([ConnectErrorDetail("google.rpc.RetryInfo", b"\x08\x01")]) is None


def test_type_url_prefix_is_tolerated() -> None:
    d = encode_error_details(10, title="t")
    info = decode_error_details([ConnectErrorDetail("type.googleapis.com/aiserver.v1.ErrorDetails", d.value)])
    assert info is not None and info.name == "PRO_USER_USAGE_LIMIT"


def test_unknown_enum_value_is_kept() -> None:
    info = decode_error_details([ConnectErrorDetail("aiserver.v1.ErrorDetails", b"\x08\xe7\x07")])
    assert info is not None and info.error == 999 and info.name == "UNKNOWN_999"


def test_corrupt_detail_raises_protocol_error_but_mapping_falls_back() -> None:
    bad = ConnectError(
        "resource_exhausted", "slow down", (ConnectErrorDetail("aiserver.v1.ErrorDetails", b"\xff"),)
    )
    with pytest.raises(ProtocolError):
        decode_error_details(bad.details)
    exc = map_connect_error(bad)
    assert type(exc) is RateLimitError and exc.retryable


def _with(enum: int, code: str = "unknown", **kw: object) -> ConnectError:
    return ConnectError(code, "Error", (encode_error_details(enum, title="T", detail="D", **kw),))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("enum", "cls", "retryable"),
    [
        (2, AuthenticationError, False),
        (12, AuthenticationError, False),
        (1, AuthenticationError, False),
        (42, AuthenticationError, False),
        (4, PermissionDeniedError, False),
        (9, UsageLimitError, False),
        (10, UsageLimitError, False),
        (44, UsageLimitError, False),
        (7, RateLimitError, True),
        (22, RateLimitError, True),
        (34, RateLimitError, True),
        (50, RateLimitError, True),
        (51, RateLimitError, True),
        (5, ModelNotFoundError, False),
        (61, ModelNotFoundError, False),
        (30, OutdatedClientError, False),
        (43, ConfigurationError, False),
        (25, NetworkError, True),
        (59, NetworkError, True),
        (21, CursorPipeError, False),
        (29, CursorPipeError, False),
    ],
)
def test_error_details_enum_mapping(enum: int, cls: type[CursorPipeError], retryable: bool) -> None:
    exc = map_connect_error(_with(enum))
    assert type(exc) is cls
    assert exc.retryable is retryable
    assert exc.message.startswith("T D")


def test_usage_limit_is_not_a_plain_rate_limit() -> None:
    usage = map_connect_error(_with(10, "resource_exhausted"))
    rate = map_connect_error(_with(50, "resource_exhausted"))
    assert isinstance(usage, UsageLimitError) and not usage.retryable
    assert type(rate) is RateLimitError and rate.retryable


def test_explicit_not_retryable_wins_for_rate_limit() -> None:
    exc = map_connect_error(_with(50, is_retryable=False))
    assert type(exc) is RateLimitError and not exc.retryable


def test_retry_after_from_metadata_and_argument() -> None:
    exc = map_connect_error(_with(50, "resource_exhausted"), metadata={"retry-after": ["7"]})
    assert exc.retry_after == 7.0
    exc = map_connect_error(_with(50), metadata={"Retry-After": "2"})
    assert exc.retry_after == 2.0
    assert map_connect_error(_with(50), retry_after=1.5).retry_after == 1.5


def test_bad_model_lists_valid_models() -> None:
    exc = map_connect_error(_with(5, "invalid_argument"), model="gpt-9", available_models=["b", "a"])
    assert isinstance(exc, ModelNotFoundError)
    assert exc.model == "gpt-9" and exc.available == ["a", "b"]
    assert exc.code == "BAD_MODEL_NAME"


@pytest.mark.parametrize(
    ("code", "message", "cls", "retryable"),
    [
        ("unauthenticated", "Not logged in", AuthenticationError, False),
        ("permission_denied", "no", PermissionDeniedError, False),
        ("resource_exhausted", "stub resource_exhausted", RateLimitError, True),
        ("resource_exhausted", "You've hit your usage limit", UsageLimitError, False),
        ("resource_exhausted", "Please update to the latest version of Cursor", OutdatedClientError, False),
        ("invalid_argument", "bad", ConfigurationError, False),
        ("not_found", "bad", ConfigurationError, False),
        ("unavailable", "down", NetworkError, True),
        ("deadline_exceeded", "slow", NetworkError, True),
        ("internal", "oops", NetworkError, True),
        ("canceled", "bye", CursorPipeError, False),
    ],
)
def test_connect_code_mapping_without_details(
    code: str, message: str, cls: type[CursorPipeError], retryable: bool
) -> None:
    exc = map_connect_error(ConnectError(code, message))
    assert type(exc) is cls
    assert exc.retryable is retryable


def test_secrets_in_server_messages_are_redacted() -> None:
    exc = map_connect_error(ConnectError("unauthenticated", "bad token crsr_test_fake_0123456789"))
    assert "crsr_test_fake" not in exc.message and "crsr_test_fake" not in repr(exc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
