"""Start the fake agent without importing cursorpipe (used by ``executable()``'s launcher).

Run as a script, it loads this directory as a stand-alone package named ``_cursorpipe_fake_agent``
(the fake uses only relative imports and the standard library), which skips the ~1 s import of the
library and its dependencies on every start.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _load() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    name = "_cursorpipe_fake_agent"
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    if spec is None or spec.loader is None:  # pragma: no cover - broken installation
        print("fake agent: cannot load the package", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return int(module.main())


if __name__ == "__main__":
    sys.path.pop(0)  # this directory as sys.path[0] would shadow stdlib names with ours
    sys.exit(_load())
