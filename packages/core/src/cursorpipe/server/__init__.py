"""``cursorpipe.server``: an OpenAI-compatible HTTP server over :class:`cursorpipe.CursorClient`.

    from cursorpipe.server import create_app
    app = create_app()            # FastAPI app; run it with uvicorn, or use `cursorpipe-server`

Needs the ``server`` extra (FastAPI, uvicorn and orjson): ``pip install 'cursorpipe[server]'``.
``/metrics`` additionally needs the ``metrics`` extra (prometheus-client).
"""

from __future__ import annotations

_MISSING: str | None = None
try:  # design.md lesson 14: a missing extra names the exact install command.
    import fastapi as _fastapi  # noqa: F401
    import orjson as _orjson  # noqa: F401
    import uvicorn as _uvicorn  # noqa: F401
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in a subprocess test
    _MISSING = _exc.name or "fastapi"

if _MISSING is not None:
    raise ImportError(
        f"cursorpipe.server needs the 'server' extra ({_MISSING} is not installed). "
        "Install it with: pip install 'cursorpipe[server]'"
    )

from .app import create_app  # noqa: E402

__all__ = ["create_app"]
