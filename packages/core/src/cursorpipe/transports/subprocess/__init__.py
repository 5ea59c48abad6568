"""The subprocess transport: one ``agent --print`` process per request (acp.md §6).

``SubprocessTransport(config)`` is selected with ``CURSORPIPE_STRATEGY=subprocess``. Its sans-IO
pieces are private: :mod:`cursorpipe._codecs.stream_json` (stream-json parser with duplicate
removal), ``_models`` (``agent models`` output), ``_prompt`` (flattening and safe prompt passing), ``_errors``
(classification of stderr, exit codes and in-band errors).
"""

from ._transport import SubprocessSession, SubprocessTransport

__all__ = ["SubprocessSession", "SubprocessTransport"]
