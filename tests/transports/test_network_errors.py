"""The one network-error mapping (``cursorpipe._net.network_errors``, issue 13)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from cursorpipe._net import network_errors
from cursorpipe.errors import NetworkError, StreamDroppedError, StreamStalledError


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("boom https://user:secret@host"),
        httpx.ReadError("x"),
        ConnectionResetError(104, "reset"),
        OSError("no route"),
        TimeoutError(),
    ],
)
def test_network_failures_become_network_error_with_cause_and_no_text(failure: BaseException) -> None:
    with (
        pytest.raises(NetworkError) as info,
        network_errors("Could not reach X ({exc}).", transport="connect"),
    ):
        raise failure
    err = info.value
    assert type(err) is NetworkError
    assert err.__cause__ is failure
    assert err.message == f"Could not reach X ({type(failure).__name__})."
    assert err.code == "unavailable" and err.retryable and err.transport == "connect"
    assert "secret" not in str(err)


def test_timeout_message_only_for_httpx_timeouts_and_custom_class() -> None:
    with pytest.raises(NetworkError) as info, network_errors("failed {exc}", timeout_message="late {exc}"):
        raise httpx.ReadTimeout("t")
    assert info.value.message == "late ReadTimeout" and info.value.code == "deadline_exceeded"
    with pytest.raises(NetworkError) as info, network_errors("failed {exc}", timeout_message="late {exc}"):
        raise httpx.ConnectError("c")
    assert info.value.message == "failed ConnectError"
    with (
        pytest.raises(StreamDroppedError) as dropped,
        network_errors("broke {exc}", error=StreamDroppedError, code="stream_dropped"),
    ):
        raise httpx.RemoteProtocolError("r")
    assert dropped.value.code == "stream_dropped"


def test_cursorpipe_errors_cancellation_and_other_errors_pass_through() -> None:
    stalled = StreamStalledError("stalled")  # a TimeoutError subclass: must stay what it is
    with pytest.raises(StreamStalledError) as info, network_errors("x"):
        raise stalled
    assert info.value is stalled
    with pytest.raises(asyncio.CancelledError), network_errors("x"):
        raise asyncio.CancelledError
    with pytest.raises(ValueError), network_errors("x"):
        raise ValueError("not a network failure")
