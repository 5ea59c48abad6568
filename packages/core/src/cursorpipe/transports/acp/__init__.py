"""The ``acp`` transport: one persistent ``agent acp`` process speaking JSON-RPC over stdio.

Modules: ``_connection`` (the process, handshake, routing by
``sessionId``, answers to the agent's requests), ``_dispenser`` (pre-created sessions), ``_models``
(CLI ids ↔ ACP ids, acp.md §3.2), ``_errors`` (classification) and ``transport`` (``AcpTransport``). The
JSON-RPC line codec is :mod:`cursorpipe._codecs.jsonrpc`.
"""

from .transport import AcpSession, AcpTransport, flatten_messages

__all__ = ["AcpSession", "AcpTransport", "flatten_messages"]
