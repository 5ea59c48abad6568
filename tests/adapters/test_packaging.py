"""The adapter distributions build as wheels with the right metadata and work when installed alone.

Wheels for the core and both adapters are built once per module (``uv build``, or
``python -m build`` without uv); each adapter is then installed into its own fresh venv with only
its declared dependencies (the local wheels via ``--find-links``, the rest from the package index)
and exercised offline in a subprocess. uv's cache keeps repeated runs fast.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "cursorpipe": ROOT / "packages/core",
    "langchain-cursorpipe": ROOT / "packages/langchain_cursorpipe",
    "llama-index-llms-cursorpipe": ROOT / "packages/llamaindex_cursorpipe",
}
INSTALL_TIMEOUT_S = 600


def _uv() -> str | None:
    local = ROOT / ".tools" / ("Scripts" if os.name == "nt" else "bin") / "uv"
    if local.exists():
        return str(local)
    return shutil.which("uv")


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_S, **kwargs)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    uv = _uv()
    for source in PACKAGES.values():
        if uv:
            _run([uv, "build", "--wheel", "--out-dir", str(out), str(source)])
        else:
            _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)])
    found: dict[str, Path] = {}
    for name in PACKAGES:
        matches = list(out.glob(name.replace("-", "_") + "-*.whl"))
        assert len(matches) == 1, f"expected one wheel for {name}, got {matches}"
        found[name] = matches[0]
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(meta).decode("utf-8"))


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_langchain_wheel_metadata(wheels: dict[str, Path]) -> None:
    wheel = wheels["langchain-cursorpipe"]
    meta = _metadata(wheel)
    assert meta["Name"] == "langchain-cursorpipe"
    assert meta["Version"] == "0.1.0"
    assert meta["Requires-Python"] == ">=3.11"
    requires = sorted(meta.get_all("Requires-Dist") or [])
    assert requires == ["cursorpipe<0.2,>=0.1.0", "langchain-core<2,>=1.4"]
    names = _names(wheel)
    assert "langchain_cursorpipe/py.typed" in names
    assert "langchain_cursorpipe/__init__.py" in names
    assert not any(n.startswith(("tests/", "llama_index/")) for n in names)


def test_llamaindex_wheel_metadata_and_namespace(wheels: dict[str, Path]) -> None:
    wheel = wheels["llama-index-llms-cursorpipe"]
    meta = _metadata(wheel)
    assert meta["Name"] == "llama-index-llms-cursorpipe"
    assert meta["Version"] == "0.1.0"
    requires = sorted(meta.get_all("Requires-Dist") or [])
    assert requires == ["cursorpipe<0.2,>=0.1.0", "llama-index-core<0.15,>=0.12"]
    names = _names(wheel)
    assert "llamaindex_cursorpipe/py.typed" in names
    assert "llama_index/llms/cursorpipe/__init__.py" in names
    assert "llama_index/llms/cursorpipe/py.typed" in names  # mypy accepts the README import
    # Shipping either of these would shadow every other llama_index integration.
    assert "llama_index/__init__.py" not in names
    assert "llama_index/llms/__init__.py" not in names


def _venv(tmp: Path, wheels: dict[str, Path], requirement: str) -> Path:
    venv = tmp / "venv"
    uv = _uv()
    if uv:
        _run([uv, "venv", "--python", sys.executable, str(venv)])
        python = venv / "bin" / "python"
        _run(
            [
                uv,
                "pip",
                "install",
                "--python",
                str(python),
                "--find-links",
                str(wheels["cursorpipe"].parent),
                requirement,
            ]
        )
    else:
        _run([sys.executable, "-m", "venv", str(venv)])
        python = venv / "bin" / "python"
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--find-links",
                str(wheels["cursorpipe"].parent),
                requirement,
            ]
        )
    return python


def _check(python: Path, code: str) -> str:
    # -I: isolated mode, so nothing from this checkout or the dev venv leaks onto sys.path.
    result = _run([str(python), "-I", "-c", textwrap.dedent(code)], cwd=str(python.parent))
    return result.stdout


def test_langchain_package_installs_alone_and_works_offline(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path, wheels, "langchain-cursorpipe==0.1.0")
    out = _check(
        python,
        """
        import importlib.metadata as md, importlib.util
        from cursorpipe import CursorClient, MockTransport
        from langchain_cursorpipe import ChatCursor
        assert importlib.util.find_spec("llama_index") is None   # nothing undeclared came along
        assert importlib.util.find_spec("langchain_tests") is None
        llm = ChatCursor(model="auto", api_key="crsr_offline")
        assert llm.get_num_tokens("hello world") > 0
        mock = ChatCursor(client=CursorClient(transport=MockTransport()))
        print(mock.invoke("packaged").content)
        print(md.version("langchain-cursorpipe"))
        """,
    )
    assert out.split() == ["echo:", "packaged", "0.1.0"]


def test_llamaindex_package_installs_alone_and_works_offline(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path, wheels, "llama-index-llms-cursorpipe==0.1.0")
    out = _check(
        python,
        """
        import importlib.metadata as md, importlib.util
        from cursorpipe import CursorClient, MockTransport
        from llama_index.llms.cursorpipe import CursorLLM
        from llamaindex_cursorpipe import CursorLLM as Same
        assert CursorLLM is Same
        assert importlib.util.find_spec("langchain_core") is None
        llm = CursorLLM(client=CursorClient(transport=MockTransport()))
        assert llm.metadata.is_chat_model
        print(llm.complete("packaged").text)
        print(md.version("llama-index-llms-cursorpipe"))
        """,
    )
    assert out.split() == ["echo:", "packaged", "0.1.0"]
