"""Connect transport: Cursor's cloud API over Connect-RPC + protobuf, from pure Python (issue 3).

``ConnectTransport(config)`` talks to ``config.backend_url`` (default ``https://api2.cursor.sh``)
with full-duplex HTTP/2 ``Run`` or ``RunSSE`` + ``BidiAppend``; see ``transport.py``.
"""

from .transport import CLIENT_TYPE, CLIENT_VERSION, ConnectTransport

__all__ = ["CLIENT_TYPE", "CLIENT_VERSION", "ConnectTransport"]
