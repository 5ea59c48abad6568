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

from ._bridge import SyncBridge
from ._client_cache import client_for_loop, close_clients
from ._default import chat, close, default_client, generate, stream, warmup
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
    AuthenticationError,
    ConfigurationError,
    CursorPipeError,
    ModelNotFoundError,
    NetworkError,
    OutdatedClientError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    SessionError,
    StreamDroppedError,
    StreamStalledError,
    StructuredOutputError,
    ToolLoopError,
    ToolResultTimeoutError,
    UsageLimitError,
)
from .session import CursorSession
from .transports.base import Transport, TransportCapabilities, TransportSession
from .transports.mock import MockTransport
from .types import (
    ChatMessage,
    CompletionResult,
    Event,
    ImagePart,
    ModelInfo,
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

__version__ = "0.1.0"

__all__ = [
    "AgentCrashError",
    "AgentNotFoundError",
    "AgentStartupError",
    "AgentTimeoutError",
    "AuthenticationError",
    "ChatMessage",
    "CompletionResult",
    "ConfigurationError",
    "CursorClient",
    "CursorPipeConfig",
    "CursorPipeError",
    "CursorSession",
    "Event",
    "ImagePart",
    "MockTransport",
    "ModelFacts",
    "ModelInfo",
    "ModelNotFoundError",
    "NetworkError",
    "OutdatedClientError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
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
    "TransportInfo",
    "TransportSession",
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
