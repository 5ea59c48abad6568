"""Pins the public surface of the core package."""

from __future__ import annotations

import cursorpipe

REQUIRED = {
    "CursorClient",
    "CursorSession",
    "CursorPipeConfig",
    "Strategy",
    "CompletionResult",
    "CursorPipeError",
    "AgentNotFoundError",
    "AuthenticationError",
    "AgentTimeoutError",
    "RateLimitError",
    "AgentCrashError",
    "NetworkError",
    "SessionError",
    "generate",
    "chat",
    "stream",
    "warmup",
    "close",
}

PINNED = sorted(
    [
        "APIError",
        "AdapterMixin",
        "AgentCrashError",
        "AgentNotFoundError",
        "AgentStartupError",
        "AgentTimeoutError",
        "AuthenticationError",
        "CallerError",
        "CallOptions",
        "ChatMessage",
        "CompletionResult",
        "ConfigurationError",
        "CursorClient",
        "CursorPipeConfig",
        "CursorPipeError",
        "CursorSession",
        "ErrorCode",
        "Event",
        "ImagePart",
        "MockTransport",
        "ModelFacts",
        "ModelInfo",
        "ModelNotFoundError",
        "NetworkError",
        "OutdatedClientError",
        "ParsedOutput",
        "PermissionDeniedError",
        "ProtocolError",
        "RateLimitError",
        "RequestTimeoutError",
        "SessionBinding",
        "SessionError",
        "Strategy",
        "StreamDroppedError",
        "StreamStalledError",
        "StructuredOutputError",
        "SyncBridge",
        "SyncCursorClient",
        "SyncCursorSession",
        "TextDelta",
        "TextPart",
        "ThinkingDelta",
        "ToolCall",
        "ToolCallDelta",
        "ToolCallEvent",
        "ToolLoopError",
        "ToolResultTimeoutError",
        "ToolSpec",
        "Transport",
        "TransportCapabilities",
        "TransportError",
        "TransportFailureError",
        "TransportInfo",
        "TransportSession",
        "TurnAccumulator",
        "TurnEnd",
        "TurnRequest",
        "Usage",
        "UsageEvent",
        "UsageLimitError",
        "__version__",
        "chat",
        "client_for_loop",
        "close",
        "close_clients",
        "default_client",
        "generate",
        "model_facts",
        "stream",
        "warmup",
    ]
)


def test_all_is_pinned() -> None:
    assert sorted(cursorpipe.__all__) == PINNED


def test_required_names_present_and_importable() -> None:
    assert set(cursorpipe.__all__) >= REQUIRED
    for name in cursorpipe.__all__:
        assert hasattr(cursorpipe, name), name


def test_every_error_inherits_the_base() -> None:
    errors = [getattr(cursorpipe, n) for n in cursorpipe.__all__ if n.endswith("Error")]
    assert len(errors) >= 16
    for cls in errors:
        assert issubclass(cls, cursorpipe.CursorPipeError), cls


def test_public_symbols_are_documented() -> None:
    for name in cursorpipe.__all__:
        obj = getattr(cursorpipe, name)
        if callable(obj) and not name.startswith("_"):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_integration_kit_is_pinned() -> None:
    import cursorpipe.integration as kit

    assert sorted(kit.__all__) == [
        "AdapterMixin",
        "CallOptions",
        "EventTranslator",
        "estimate_tokens",
        "extract_json",
        "image_part",
        "normalize_tool_choice",
        "session_prompt",
        "sync_stream",
    ]
    assert kit.AdapterMixin is cursorpipe.AdapterMixin and kit.CallOptions is cursorpipe.CallOptions
    for name in kit.__all__:
        assert (getattr(kit, name).__doc__ or "").strip(), f"integration.{name} has no docstring"
