"""A faithful emulator of Cursor's cloud API for offline tests (``pip install 'cursorpipe[testing]'``).

A real Connect server on loopback (Hypercorn: HTTP/1.1 and h2c prior knowledge on one port) serving
what Cursor's own client uses (connect.md, official-sdk-as-peer.md): ``POST
/auth/exchange_user_api_key`` (issues expiring JWT-shaped tokens), ``GET /v1/models`` (raw API key),
the ``GetUsableModels``/``GetDefaultModelForCli`` RPCs (``agent.v1.AgentService`` and
``aiserver.v1.AiService``, proto and JSON), ``GetServerConfig``, ``GetUserPrivacyMode``,
``AgentService/RunSSE`` + ``BidiService/BidiAppend`` and the full-duplex ``AgentService/Run``. Every
other path answers 404 ``{"code": "unimplemented"}``.

Each turn runs as Cursor runs it: system-prompt blob stored in the client's KV store, earlier turns
fetched back from it (multi-turn state is client-held), the request-context exec, an optional
interaction query, thinking and text deltas, token deltas, a checkpoint, ``turn_ended`` with usage,
and the end-stream frame. Cursor's official SDK completes turns against it (the conformance test).

    from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply

    async with Emulator(Behaviour(chunks=3)) as emu:
        ...  # point a client at emu.url with emu.api_key
        emu.inject(Fault.RATE_LIMIT)        # the next run fails with a rate-limit error

    with Emulator.start_in_thread() as emu:  # sync code, notebooks
        ...

    python -m cursorpipe.testing.emulator --host 127.0.0.1 --port 8765
"""

from __future__ import annotations

from ._app import RecordedRequest
from ._behaviour import (
    DEFAULT_MODELS,
    DEFAULT_THINKING,
    Behaviour,
    Fault,
    ModelSpec,
    ReplyContext,
    Usage,
    estimate_tokens,
    expected_reply,
)
from ._server import DEFAULT_API_KEY, Emulator
from ._turn import RunRecord

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "DEFAULT_THINKING",
    "Behaviour",
    "Emulator",
    "Fault",
    "ModelSpec",
    "RecordedRequest",
    "ReplyContext",
    "RunRecord",
    "Usage",
    "estimate_tokens",
    "expected_reply",
]
