"""The notebooks stay true: each one runs top to bottom against the emulator and prints what it stored.

The stored outputs in ``notebooks/*.ipynb`` come from ``scripts/make_notebooks.py --execute``. Here
every notebook is built from that script, executed in a fresh kernel (offline, whatever
``CURSOR_API_KEY`` says) and compared cell by cell with the stored file: the cells must be the
script's, and the outputs must match exactly once the run-dependent parts (ports, ids, addresses,
temporary paths: ``VOLATILE`` in the script) are normalised.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_notebooks.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebooks", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make = _load_script()
NAMES = sorted(make.NOTEBOOKS)
REGENERATE = ".venv/bin/python scripts/make_notebooks.py --execute"


def _show(cells: list[tuple[str, list[str]]], index: int) -> list[str]:
    source, outputs = cells[index]
    return [*source.splitlines(), "-- outputs --", *"\n".join(outputs).splitlines()]


def test_every_notebook_is_built_by_the_script() -> None:
    on_disk = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == NAMES
    assert {
        "01_quickstart.ipynb",
        "02_langchain.ipynb",
        "03_llamaindex.ipynb",
        "04_server_openai.ipynb",
    } <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_has_the_scripts_cells_and_its_outputs(name: str) -> None:
    stored = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbformat.validate(stored)
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in make.build(name).cells
    ], f"{name} differs from scripts/make_notebooks.py; regenerate with {REGENERATE}"
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name} is stored unexecuted: {REGENERATE}"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{name} stores an error"


def test_volatile_parts_are_normalised_and_nothing_else() -> None:
    text = (
        "at http://127.0.0.1:40123/v1 session 7ed2d59a-3a77-45cd-80d0-36e4f60936d0 "
        "id call_2bc17f07_1 chatcmpl-a281ed27cbd77d60b4cbac41 <obj at 0x7f3a2b1c> /tmp/x/y.log"
    )
    assert make.normalise(text) == (
        "at http://127.0.0.1:<port>/v1 session <uuid> id <call-id> chatcmpl-<id> <obj at <address>> <tmp>"
    )
    steady = "Emulated reply to: Count from one to five\nusage: 19 + 17 tokens in 1989"
    assert make.normalise(steady) == steady


def test_comparison_sees_a_changed_output() -> None:
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    before = make.comparable(nb)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.outputs)
    cell.outputs[0].text += "x"
    assert make.comparable(nb) != before


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_reproduces_its_stored_outputs(name: str) -> None:
    stored = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    started = time.monotonic()
    fresh = make.execute(make.build(name))
    elapsed = time.monotonic() - started
    want, got = make.comparable(stored), make.comparable(fresh)
    assert [src for src, _ in want] == [src for src, _ in got], (
        f"{name}: the cells differ from scripts/make_notebooks.py; regenerate with {REGENERATE}"
    )
    for i, ((_, stored_out), (_, fresh_out)) in enumerate(zip(want, got, strict=True)):
        if stored_out != fresh_out:
            diff = "\n".join(
                difflib.unified_diff(_show(want, i), _show(got, i), "stored", "fresh", lineterm="")
            )
            pytest.fail(
                f"{name}, code cell {i}: the outputs changed. If the change is intended, regenerate "
                f"with {REGENERATE}\n{diff}"
            )
    assert any(out for _, out in got), f"{name} printed nothing"
    assert elapsed < 60, f"{name} took {elapsed:.0f} s"
