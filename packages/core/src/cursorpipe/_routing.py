"""The transport factory for the client; it lives in :mod:`cursorpipe.transports._factory`."""

from __future__ import annotations

from .transports._factory import create_transport

__all__ = ["create_transport"]
