"""The import rules of issue 13 hold, and the checker really looks at the code.

``[tool.importlinter]`` in the root pyproject.toml states them (the generated protobuf code only in
the connect transport, the codecs and the test doubles; transports never import the client, the
session or the server; the codecs are sans-IO; the adapters use only the public package; no
cycles). ``python3 dev.py lint`` runs the same check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports.exe" if os.name == "nt" else "lint-imports")


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_every_import_contract_is_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    for name in (
        "Generated protobuf code is used only by the connect transport",
        "Transports never import the client, the session or the server",
        "The adapters use only the public cursorpipe package",
        "No import cycles between the modules of cursorpipe",
    ):
        assert name in result.stdout


def test_a_broken_rule_is_reported(tmp_path: Path) -> None:
    # The connect transport does use the protobuf code: forbidding it must fail, naming the import.
    config = tmp_path / "importlinter.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["cursorpipe"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "connect without protobuf"\n'
        'type = "forbidden"\n'
        'source_modules = ["cursorpipe.transports.connect"]\n'
        'forbidden_modules = ["cursorpipe._proto"]\n'
    )
    result = _lint("--config", str(config))
    assert result.returncode == 1
    assert "connect without protobuf BROKEN" in result.stdout
    assert "cursorpipe.transports.connect" in result.stdout and "cursorpipe._proto" in result.stdout
