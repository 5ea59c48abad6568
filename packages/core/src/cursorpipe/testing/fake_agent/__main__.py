"""``python -m cursorpipe.testing.fake_agent …`` runs the fake ``agent``."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
