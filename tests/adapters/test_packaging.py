"""The three distributions build as wheels with the right metadata and work when installed alone.

Wheels for the core and both adapters are built once per module (``uv build``, or
``python -m build`` without uv); each adapter is then installed into its own fresh venv with only
its declared dependencies (the local wheels via ``--find-links``, the rest from the package index)
and exercised offline in a subprocess. The README's install recipes (``pkg @ git+…#subdirectory=…``)
are run as written against a local clone of this repository, each into a fresh venv. uv's cache keeps
repeated runs fast.
"""

from __future__ import annotations

import email.message
import email.parser
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "cursorpipe": ROOT / "packages/core",
    "langchain-cursorpipe": ROOT / "packages/langchain_cursorpipe",
    "llama-index-llms-cursorpipe": ROOT / "packages/llamaindex_cursorpipe",
    "cursorpipe-testing": ROOT / "packages/testing",
}
INSTALL_TIMEOUT_S = 600
MODULES = {
    "cursorpipe": "cursorpipe",
    "langchain-cursorpipe": "langchain_cursorpipe",
    "llama-index-llms-cursorpipe": "llamaindex_cursorpipe",
    "cursorpipe-testing": "cursorpipe",  # it ships the core's cursorpipe.testing, at the core's version
}
# The placeholder home of the repository, used by every link a PyPI page shows.
REPO_URL = "https://github.com/cursorpipe/cursorpipe"


def _declared_version(name: str) -> str:
    """``__version__`` from the package source: the one place each distribution's version lives."""
    home = PACKAGES["cursorpipe" if MODULES[name] == "cursorpipe" else name]
    init = home / "src" / MODULES[name] / "__init__.py"
    found = re.search(r'^__version__ = "([^"]+)"$', init.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, f"no __version__ in {init}"
    return found.group(1)


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


def test_one_version_for_all_three_and_the_adapters_accept_the_core(wheels: dict[str, Path]) -> None:
    versions = {name: _declared_version(name) for name in PACKAGES}
    assert len(set(versions.values())) == 1, versions
    core_version = versions["cursorpipe"]
    for name, wheel in wheels.items():
        meta = _metadata(wheel)
        assert meta["Version"] == versions[name]  # hatchling read it from __version__
        if name != "cursorpipe":
            (core_req,) = [
                Requirement(r) for r in meta.get_all("Requires-Dist") or [] if r.startswith("cursorpipe")
            ]
            assert core_req.specifier.contains(core_version), (name, str(core_req))


@pytest.mark.parametrize("name", list(PACKAGES))
def test_each_wheel_carries_the_license_and_its_pypi_page(wheels: dict[str, Path], name: str) -> None:
    wheel = wheels[name]
    with zipfile.ZipFile(wheel) as zf:
        licenses = [n for n in zf.namelist() if ".dist-info/licenses/" in n]
        assert [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"]
        shipped = zf.read(licenses[0]).decode("utf-8")
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert shipped.startswith("MIT License") and "the cursorpipe authors" in shipped
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Programming Language :: Python :: 3.11", "Typing :: Typed"} <= classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Changelog", "Documentation"} <= set(urls)
    assert all(u.startswith(REPO_URL) for u in urls.values()), urls
    # The long description is the package README verbatim: that file is the PyPI page.
    readme = (PACKAGES[name] / "README.md").read_text(encoding="utf-8")
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == readme.strip()


@pytest.mark.parametrize("name", list(PACKAGES))
def test_package_readmes_are_pypi_pages_without_relative_links(name: str) -> None:
    readme = (PACKAGES[name] / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# {name}\n")
    assert "## Install" in readme
    recipe = re.escape(name) + r"(\[[a-z,]+\])? @ git\+" + re.escape(REPO_URL) + "#subdirectory="
    assert re.search(recipe + re.escape(str(PACKAGES[name].relative_to(ROOT))), readme)
    assert "```python" in readme  # the first lines a user types
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "a PyPI page should link back to the repository"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert not relative, f"links that break on PyPI: {relative}"
    assert all(t.startswith(REPO_URL) or t.startswith("#") for t in targets), targets


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
    # The code lives at LlamaIndex's conventional path; llamaindex_cursorpipe is only an alias.
    assert {"llama_index/llms/cursorpipe/base.py", "llama_index/llms/cursorpipe/utils.py"} <= names
    assert "llamaindex_cursorpipe/__init__.py" in names
    assert not any(n.startswith("llamaindex_cursorpipe/") and n.endswith("base.py") for n in names)
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


def test_core_alone_server_command_says_which_extra_it_needs(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path, wheels, "cursorpipe==" + _declared_version("cursorpipe"))
    out = _check(
        python,
        """
        import importlib.util, os, sys
        from cursorpipe import CursorClient, MockTransport
        assert importlib.util.find_spec("fastapi") is None and importlib.util.find_spec("uvicorn") is None
        assert importlib.util.find_spec("cursorpipe.testing") is None  # no test double for every user
        assert not os.path.exists(os.path.join(os.path.dirname(sys.executable), "cursorpipe-fake-agent"))
        print(type(CursorClient(transport=MockTransport())).__name__)
        """,
    )
    assert out.split() == ["CursorClient"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    result = subprocess.run(
        [str(python.parent / "cursorpipe-server"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'cursorpipe[server]'" in lines[0] and "fastapi" in lines[0]


# --- the README's install recipes, from a clone -------------------------------------------------


def _readme_install_commands() -> list[list[str]]:
    """The ``pip install`` commands of the README's install section, as argv lists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Installing it in your project", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    repo_line = next(line for line in joined.splitlines() if line.startswith("REPO="))
    assert repo_line.split()[0] == f"REPO=git+{REPO_URL}"
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("pip install")]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository's committed state, as a user would install from."""
    target = tmp_path_factory.mktemp("clone") / "cursorpipe"
    _run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)])
    return target


def test_the_readme_lists_a_recipe_for_each_distribution() -> None:
    commands = _readme_install_commands()
    installed = [
        [Requirement(arg.replace("$REPO", "git+file:///x")).name for arg in cmd[2:]] for cmd in commands
    ]
    assert installed == [
        ["cursorpipe"],
        ["cursorpipe", "langchain-cursorpipe"],
        ["cursorpipe", "llama-index-llms-cursorpipe"],
        ["cursorpipe", "cursorpipe-testing"],
    ]
    # The core recipe shows an extra; every adapter recipe brings the core along (it is not on PyPI).
    assert Requirement(commands[0][2].replace("$REPO", "git+file:///x")).extras == {"server"}


_RECIPE_CHECKS = {
    "cursorpipe": """
        import importlib.metadata as md
        import fastapi, uvicorn                      # the server extra came along
        from cursorpipe.server import create_app
        print(md.version("cursorpipe"))
        """,
    "langchain-cursorpipe": """
        import importlib.metadata as md
        from cursorpipe import CursorClient, MockTransport
        from langchain_cursorpipe import ChatCursor
        print(ChatCursor(client=CursorClient(transport=MockTransport())).invoke("recipe").content)
        print(md.version("langchain-cursorpipe"))
        """,
    "llama-index-llms-cursorpipe": """
        import importlib.metadata as md
        from cursorpipe import CursorClient, MockTransport
        from llama_index.llms.cursorpipe import CursorLLM
        print(CursorLLM(client=CursorClient(transport=MockTransport())).complete("recipe").text)
        print(md.version("llama-index-llms-cursorpipe"))
        """,
    "cursorpipe-testing": """
        import importlib.metadata as md, os, subprocess, sys
        from cursorpipe.testing.emulator import Emulator
        from cursorpipe.testing.fake_agent import catalog
        agent = os.path.join(os.path.dirname(sys.executable), "cursorpipe-fake-agent")
        done = subprocess.run([agent, "-p", "--", "recipe"], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == catalog.expected_reply("recipe"), done.stdout
        print(md.version("cursorpipe-testing"))
        """,
}


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=list(_RECIPE_CHECKS))
def test_readme_install_recipe_works_from_a_clone(clone: Path, tmp_path: Path, index: int) -> None:
    uv = _uv()
    if uv is None:
        pytest.fail("uv is needed to run the install recipes (python3 dev.py sync provides it)")
    command = _readme_install_commands()[index]
    assert command[:2] == ["pip", "install"]
    requirements = [arg.replace("$REPO", f"git+file://{clone}") for arg in command[2:]]
    venv = tmp_path / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    # `uv pip install` is pip's interface on uv's cache; the requirement strings are the README's.
    _run([uv, "pip", "install", "--python", str(python), *requirements])
    target = Requirement(requirements[-1]).name
    out = _check(python, _RECIPE_CHECKS[target]).split()
    version = _declared_version(target)
    assert out[-1] == version
    if target in ("langchain-cursorpipe", "llama-index-llms-cursorpipe"):
        assert out[:2] == ["echo:", "recipe"]
    # Installed from the clone's subdirectory (PEP 610 records where from), not from some index.
    origin = _check(
        python,
        f"""
        import importlib.metadata as md, json
        for name in ("cursorpipe", {target!r}):
            d = json.loads(md.distribution(name).read_text("direct_url.json"))
            print(name, d["url"], d["vcs_info"]["vcs"], d.get("subdirectory"))
        """,
    ).splitlines()
    assert [line.split()[0] for line in origin] == ["cursorpipe", target]
    for line in origin:
        name, url, vcs, subdirectory = line.split()
        assert url.endswith(str(clone)) and vcs == "git"
        assert subdirectory == str(PACKAGES[name].relative_to(ROOT))


def test_test_doubles_ship_only_in_their_own_distribution(wheels: dict[str, Path]) -> None:
    core = _names(wheels["cursorpipe"])
    assert not any(n.startswith("cursorpipe/testing/") for n in core)
    with zipfile.ZipFile(wheels["cursorpipe"]) as zf:
        scripts = zf.read(next(n for n in core if n.endswith("entry_points.txt"))).decode()
    assert "cursorpipe-fake-agent" not in scripts and "cursorpipe-server" in scripts
    testing = _names(wheels["cursorpipe-testing"])
    code = {n for n in testing if not n.startswith("cursorpipe_testing-")}
    assert "cursorpipe/testing/emulator/__init__.py" in code
    assert "cursorpipe/testing/fake_agent/__init__.py" in code
    # Only the test doubles: never a second copy of the core (that would clash on install).
    assert all(n.startswith("cursorpipe/testing/") for n in code), sorted(code)
    meta = _metadata(wheels["cursorpipe-testing"])
    requires = sorted(meta.get_all("Requires-Dist") or [])
    assert requires == ["cursorpipe<0.2,>=0.1.0", "hypercorn<1,>=0.17"]
    with zipfile.ZipFile(wheels["cursorpipe-testing"]) as zf:
        scripts = zf.read(next(n for n in testing if n.endswith("entry_points.txt"))).decode()
    assert "cursorpipe-fake-agent = cursorpipe.testing.fake_agent:main" in scripts


def test_test_doubles_also_build_from_their_sdist(tmp_path: Path) -> None:
    # The sources live outside packages/testing; hatch_build.py copies them into the sdist, so a
    # wheel built from that sdist (not from the repository) still carries them.
    uv = _uv()
    if uv is None:
        pytest.fail("uv is needed to build the sdist (python3 dev.py sync provides it)")
    _run([uv, "build", "--sdist", "--out-dir", str(tmp_path), str(PACKAGES["cursorpipe-testing"])])
    (sdist,) = tmp_path.glob("cursorpipe_testing-*.tar.gz")
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(sdist, unpacked)
    (source,) = unpacked.iterdir()
    assert (source / "cursorpipe" / "testing" / "emulator" / "__init__.py").is_file()
    _run([uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert _metadata(wheel)["Version"] == _declared_version("cursorpipe-testing")
    names = _names(wheel)
    assert "cursorpipe/testing/fake_agent/catalog.py" in names
    assert not any(n.startswith("cursorpipe/") and not n.startswith("cursorpipe/testing/") for n in names)
