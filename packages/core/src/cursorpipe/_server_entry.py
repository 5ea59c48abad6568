"""The ``cursorpipe-server`` console script, guarded against a missing ``server`` extra.

The command is installed with every ``cursorpipe``, but FastAPI and uvicorn come only with
``cursorpipe[server]``. Importing :mod:`cursorpipe.server.cli` without them fails at import time, which
a console script would show as a traceback; this entry point checks first and prints one line naming
the install command instead (design.md lesson 14).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

# What `cursorpipe[server]` adds that the server cannot start without.
_SERVER_MODULES = ("fastapi", "uvicorn")
_INSTALL = "pip install 'cursorpipe[server]'"


def missing_server_modules() -> list[str]:
    """The modules of the ``server`` extra that are not installed (empty when it is complete)."""
    return [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cursorpipe-server``, or explain in one line how to install what it needs."""
    missing = missing_server_modules()
    if missing:
        # Checked by name before importing, so an ImportError inside the server itself (a real bug)
        # still surfaces with its traceback instead of being mistaken for a missing extra.
        sys.stderr.write(
            f"cursorpipe-server needs the 'server' extra ({', '.join(missing)} not installed): {_INSTALL}\n"
        )
        return 1
    from .server.cli import main as server_main

    return server_main(argv)
