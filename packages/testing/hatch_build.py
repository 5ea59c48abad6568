"""Ship the core's ``cursorpipe/testing`` sources in this distribution (wheel and sdist).

The test doubles' code lives beside the core, in ``packages/core/src/cursorpipe/testing``: one source
tree for the workspace, where the core is installed in editable mode and already provides it. Built
wheels and sdists of this distribution carry a copy instead; an sdist keeps it at
``cursorpipe/testing`` so a wheel can be built from the sdist too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_TARGET = "cursorpipe/testing"


class TestDoublesHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the test doubles' sources to the build (not to editable installs)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            # The editable core already serves cursorpipe.testing from the source tree; a copy in
            # site-packages would go stale.
            return
        root = Path(self.root)
        in_repository = root.parent / "core" / "src" / "cursorpipe" / "testing"
        candidates = (in_repository, root / "cursorpipe" / "testing")
        source = next((c for c in candidates if (c / "__init__.py").is_file()), None)
        if source is None:
            raise FileNotFoundError(
                "cursorpipe-testing: the cursorpipe/testing sources were not found (build it from the "
                "repository, where they are in packages/core/src/cursorpipe/testing, or from its sdist)"
            )
        build_data["force_include"][str(source)] = _TARGET
