"""Pins the public surface of the adapter packages and that they use only cursorpipe's public API."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

import langchain_cursorpipe
import llamaindex_cursorpipe
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "langchain_cursorpipe": ROOT / "packages/langchain_cursorpipe",
    "llamaindex_cursorpipe": ROOT / "packages/llamaindex_cursorpipe",
}


def test_public_names() -> None:
    assert sorted(langchain_cursorpipe.__all__) == ["ChatCursor", "__version__"]
    assert sorted(llamaindex_cursorpipe.__all__) == ["CursorLLM", "__version__"]


@pytest.mark.parametrize("module", [langchain_cursorpipe, llamaindex_cursorpipe])
def test_version_comes_from_the_module(module: object) -> None:
    # One place: pyproject declares the version dynamic and hatchling reads the module's __version__.
    name = getattr(module, "__name__", "")
    pyproject = tomllib.loads((SOURCES[name] / "pyproject.toml").read_text("utf-8"))
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == f"src/{name}/__init__.py"
    distribution = pyproject["project"]["name"]
    assert getattr(module, "__version__", None) == importlib.metadata.version(distribution)


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_adapters_import_only_cursorpipes_public_api(package: str) -> None:
    # design.md lesson 9: adapters build on `cursorpipe`'s __all__ and the public integration kit
    # (`cursorpipe.integration`'s __all__), never on private modules.
    import cursorpipe
    import cursorpipe.integration

    public = {"cursorpipe": cursorpipe.__all__, "cursorpipe.integration": cursorpipe.integration.__all__}
    for path in (SOURCES[package] / "src").rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cursorpipe":
                assert node.module in public, f"{path}: imports {node.module}"
                for alias in node.names:
                    assert alias.name in public[node.module], f"{path}: {alias.name} is not public"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("cursorpipe."), f"{path}: imports {alias.name}"
