"""Transports: one protocol (``base.Transport``), several implementations.

``connect`` talks to Cursor's cloud API directly, ``acp`` drives a persistent ``agent acp`` process,
``subprocess`` runs ``agent --print`` per request, and ``mock`` is scriptable for tests.
Implementations are imported lazily by the client so a missing optional piece never breaks import.
"""

from .base import Transport, TransportCapabilities, TransportSession

__all__ = ["Transport", "TransportCapabilities", "TransportSession"]
