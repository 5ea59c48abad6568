"""cursorpipe: the models of your Cursor subscription from Python.

    import asyncio, cursorpipe

    async def main():
        async with cursorpipe.CursorClient() as client:
            print(await client.generate("auto", "Say hi"))

    asyncio.run(main())

Synchronous code uses ``cursorpipe.SyncCursorClient`` (the same methods, without ``await``).

The public API is exactly ``__all__``; every other module is private.
"""

from __future__ import annotations

# ``typing`` itself costs a few ms to import; type checkers treat any ``TYPE_CHECKING`` name as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    # What mypy and IDEs see; at run time each name is imported on first access (``__getattr__``
    # below), so ``import cursorpipe`` stays cheap and a program pays only for what it uses (the
    # transports, httpx, protobuf and the server are only imported when a client needs them).
    from typing import Any

    from ._bridge import SyncBridge
    from ._client_cache import client_for_loop, close_clients
    from ._default import chat, close, default_client, generate, stream, warmup
    from ._fold import TurnAccumulator
    from ._model_facts import ModelFacts, model_facts
    from ._session_binding import SessionBinding
    from ._sync_client import SyncCursorClient, SyncCursorSession
    from .client import CursorClient
    from .config import CursorPipeConfig, Strategy
    from .errors import (
        AgentCrashError,
        AgentNotFoundError,
        AgentStartupError,
        AgentTimeoutError,
        APIError,
        AuthenticationError,
        CallerError,
        ConfigurationError,
        CursorPipeError,
        ErrorCode,
        ModelNotFoundError,
        NetworkError,
        OutdatedClientError,
        PermissionDeniedError,
        ProtocolError,
        RateLimitError,
        RequestTimeoutError,
        SessionError,
        StreamDroppedError,
        StreamStalledError,
        StructuredOutputError,
        ToolLoopError,
        ToolResultTimeoutError,
        TransportError,
        TransportFailureError,
        UsageLimitError,
    )
    from .integration import AdapterMixin, CallOptions
    from .session import CursorSession
    from .transports.base import Transport, TransportCapabilities, TransportSession
    from .transports.mock import MockTransport
    from .types import (
        ChatMessage,
        CompletionResult,
        Event,
        ImagePart,
        ModelInfo,
        ParsedOutput,
        TextDelta,
        TextPart,
        ThinkingDelta,
        ToolCall,
        ToolCallDelta,
        ToolCallEvent,
        ToolSpec,
        TransportInfo,
        TurnEnd,
        TurnRequest,
        Usage,
        UsageEvent,
    )

#: Public name -> the private module defining it; mirrors the ``TYPE_CHECKING`` imports above
#: (``tests/core/test_lazy_imports.py`` checks that both lists agree with ``__all__``).
_EXPORTS: dict[str, str] = {
    "SyncBridge": "._bridge",
    "client_for_loop": "._client_cache",
    "close_clients": "._client_cache",
    "chat": "._default",
    "close": "._default",
    "default_client": "._default",
    "generate": "._default",
    "stream": "._default",
    "warmup": "._default",
    "ModelFacts": "._model_facts",
    "model_facts": "._model_facts",
    "SessionBinding": "._session_binding",
    "TurnAccumulator": "._fold",
    "SyncCursorClient": "._sync_client",
    "SyncCursorSession": "._sync_client",
    "CursorClient": ".client",
    "CursorPipeConfig": ".config",
    "Strategy": ".config",
    "APIError": ".errors",
    "AgentCrashError": ".errors",
    "AgentNotFoundError": ".errors",
    "AgentStartupError": ".errors",
    "AgentTimeoutError": ".errors",
    "AuthenticationError": ".errors",
    "CallerError": ".errors",
    "ConfigurationError": ".errors",
    "CursorPipeError": ".errors",
    "ErrorCode": ".errors",
    "ModelNotFoundError": ".errors",
    "NetworkError": ".errors",
    "OutdatedClientError": ".errors",
    "PermissionDeniedError": ".errors",
    "ProtocolError": ".errors",
    "RateLimitError": ".errors",
    "RequestTimeoutError": ".errors",
    "SessionError": ".errors",
    "StreamDroppedError": ".errors",
    "StreamStalledError": ".errors",
    "StructuredOutputError": ".errors",
    "ToolLoopError": ".errors",
    "ToolResultTimeoutError": ".errors",
    "TransportError": ".errors",
    "TransportFailureError": ".errors",
    "UsageLimitError": ".errors",
    "AdapterMixin": ".integration",
    "CallOptions": ".integration",
    "CursorSession": ".session",
    "Transport": ".transports.base",
    "TransportCapabilities": ".transports.base",
    "TransportSession": ".transports.base",
    "MockTransport": ".transports.mock",
    "ChatMessage": ".types",
    "CompletionResult": ".types",
    "Event": ".types",
    "ImagePart": ".types",
    "ModelInfo": ".types",
    "ParsedOutput": ".types",
    "TextDelta": ".types",
    "TextPart": ".types",
    "ThinkingDelta": ".types",
    "ToolCall": ".types",
    "ToolCallDelta": ".types",
    "ToolCallEvent": ".types",
    "ToolSpec": ".types",
    "TransportInfo": ".types",
    "TurnEnd": ".types",
    "TurnRequest": ".types",
    "Usage": ".types",
    "UsageEvent": ".types",
}

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AdapterMixin",
    "AgentCrashError",
    "AgentNotFoundError",
    "AgentStartupError",
    "AgentTimeoutError",
    "AuthenticationError",
    "CallOptions",
    "CallerError",
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


def __getattr__(name: str) -> Any:
    """Import a public name on first access (PEP 562) and cache it in the module namespace."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads, no __getattr__ call
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
