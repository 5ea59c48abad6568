"""CursorLLM is honest about its parameters and its typing (issue 15): sampling parameters
Cursor lacks are named in one warning per instance, and mypy accepts the README's import."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cursorpipe import CursorClient, MockTransport
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.cursorpipe import CursorLLM

ROOT = Path(__file__).resolve().parents[2]


def test_ignored_sampling_params_warn_once_per_instance(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="llamaindex_cursorpipe")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]

    mock = MockTransport()
    quiet = CursorLLM(client=CursorClient(transport=mock))
    assert quiet.complete("hi").text == "echo: hi"
    assert warnings() == []

    llm = CursorLLM(client=CursorClient(transport=mock), temperature=0.2, top_p=0.8)
    assert len(warnings()) == 1
    assert "temperature=0.2" in warnings()[0] and "top_p=0.8" in warnings()[0]
    assert "no sampling parameters" in warnings()[0]
    llm.chat([ChatMessage(role="user", content="hi")], seed=3)
    llm.complete("hi", temperature=0.9)
    assert len(warnings()) == 1

    caplog.clear()
    other = CursorLLM(client=CursorClient(transport=mock))
    other.complete("hi", seed=7)
    other.complete("hi", seed=7)
    assert len(warnings()) == 1 and "seed=7" in warnings()[0]


@pytest.mark.slow
def test_mypy_accepts_the_readme_import(tmp_path: Path) -> None:
    source = tmp_path / "uses_cursor_llm.py"
    source.write_text(
        "from llama_index.llms.cursorpipe import CursorLLM\n\n"
        "def build() -> CursorLLM:\n"
        '    return CursorLLM(model="auto", max_tokens=100)\n\n'
        "model: str = build().model\n"
        "wrong: int = build().model  # must be flagged: proves the package's types are read\n"
    )
    done = subprocess.run(
        # The repository's mypy settings (strict) and cache: warm after `dev.py test`'s mypy step.
        [sys.executable, "-m", "mypy", str(source)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert "import-untyped" not in out and "missing library stubs" not in out, out
    assert out.count("error:") == 1 and "uses_cursor_llm.py:7: error: Incompatible types" in out, out
