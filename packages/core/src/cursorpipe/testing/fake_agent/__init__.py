"""A fake Cursor ``agent`` executable for offline tests (console script ``cursorpipe-fake-agent``).

Work in progress: the print mode, ``models``, ``status`` and ``about`` land in the next commits.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the fake ``agent``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["acp"]:
        try:
            from .acp import run  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            print("fake agent: the acp mode is not available yet", file=sys.stderr)
            return 2
        return int(run(args))
    print("fake agent: not implemented yet", file=sys.stderr)
    return 2
