"""The notebooks are committed without outputs and match their generator, scripts/make_notebooks.py.

(They are executed top to bottom by ``pytest --nbmake notebooks``, part of the test command.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts/make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def test_the_required_notebooks_exist() -> None:
    names = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert set(GENERATOR.NOTEBOOKS) <= names
    assert {
        "01_quickstart.ipynb",
        "02_langchain.ipynb",
        "03_llamaindex.ipynb",
        "04_server_openai.ipynb",
    } <= names


@pytest.mark.parametrize("name", sorted(GENERATOR.NOTEBOOKS))
def test_notebook_has_no_outputs_and_matches_its_generator(name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: commit notebooks without outputs"
            assert cell.execution_count is None
    expected = [(c.cell_type, c.source) for c in GENERATOR.NOTEBOOKS[name]()]
    assert [(c.cell_type, c.source) for c in nb.cells] == expected, (
        f"{name} differs from scripts/make_notebooks.py; run it to regenerate"
    )
