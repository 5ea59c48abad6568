"""``import cursorpipe`` is lazy: public names load on first access, heavy dependencies stay unloaded.

Structural checks in fresh interpreters (which modules end up in ``sys.modules``), never timings:
the import-time figures live in ``bench/bench_imports.py``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import cursorpipe
import pytest

INIT = Path(cursorpipe.__file__)

#: Top-level packages (and cursorpipe subpackages) a bare ``import cursorpipe`` must not load.
HEAVY = (
    "httpx",
    "httpcore",
    "h2",
    "google.protobuf",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic_settings",
    "cursorpipe.transports",
    "cursorpipe._proto",
    "cursorpipe.server",
    "cursorpipe.auth",
)
#: What building a client must still not load: the transport (and its wire libraries) is chosen
#: and imported on the first request, so a program that never talks over connect never pays for it.
TRANSPORT_ONLY = (
    "httpx",
    "httpcore",
    "h2",
    "google.protobuf",
    "fastapi",
    "uvicorn",
    "cursorpipe._proto",
    "cursorpipe.server",
    "cursorpipe.transports.connect",
    "cursorpipe.transports.acp",
    "cursorpipe.transports.subprocess",
)


def _loaded(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter and return the modules it left in ``sys.modules``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _offending(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_bare_import_loads_nothing_heavy() -> None:
    modules = _loaded("import cursorpipe")
    assert "cursorpipe" in modules
    assert _offending(modules, HEAVY) == []
    # Only the package itself: every public name is deferred to first access.
    assert [m for m in modules if m.startswith("cursorpipe.")] == []


def test_errors_and_types_do_not_pull_the_config_or_transports() -> None:
    modules = _loaded("from cursorpipe import ChatMessage, CursorPipeError, TextDelta")
    assert "cursorpipe.errors" in modules and "cursorpipe.types" in modules
    assert _offending(modules, HEAVY) == []


def test_building_a_client_does_not_import_a_transport() -> None:
    modules = _loaded(
        "from cursorpipe import CursorClient, CursorPipeConfig\n"
        "CursorClient(CursorPipeConfig(strategy='connect', api_key='key_0000'))"
    )
    assert "cursorpipe.client" in modules
    assert _offending(modules, TRANSPORT_ONLY) == []


def test_the_server_app_loads_no_transport_and_no_gateway_client() -> None:
    # A server with an in-process client (MockTransport here, acp or subprocess in production)
    # never loads the connect transport, protobuf or httpx just to have the team gateway around:
    # passthrough tokens and shared sessions import them when that mode is on (issue 16).
    modules = _loaded("from cursorpipe.server import create_app")
    assert "cursorpipe.server._gateway._sessions" in modules
    assert (
        _offending(modules, ("httpx", "google.protobuf", "cursorpipe.transports.connect", "cursorpipe.auth"))
        == []
    )


def test_client_modules_import_the_settings_only_for_typing() -> None:
    # Issue 16: the client, its sessions and the pipeline name the config class only in
    # annotations; the settings (pydantic-settings) load when a config is built, not on import.
    modules = _loaded(
        "import cursorpipe.client, cursorpipe.session, cursorpipe._pipeline, cursorpipe._sync_client\n"
        "import cursorpipe._default, cursorpipe._client_cache\n"
    )
    assert "cursorpipe._pipeline.retries" in modules
    assert _offending(modules, ("pydantic_settings", "cursorpipe.config", "cursorpipe._routing")) == []


def test_every_public_name_resolves_to_its_defining_object() -> None:
    modules = _loaded(
        "import cursorpipe\n"
        "missing = [n for n in cursorpipe.__all__ if getattr(cursorpipe, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    assert "cursorpipe.client" in modules
    for name in cursorpipe.__all__:
        value = getattr(cursorpipe, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        module = sys.modules[cursorpipe._EXPORTS[name].replace(".", "cursorpipe.", 1)]
        assert getattr(module, name) is value, name


def test_star_import_and_dir_expose_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from cursorpipe import *", namespace)  # noqa: S102 - the statement under test
    assert {n for n in namespace if n != "__builtins__"} == set(cursorpipe.__all__)
    assert set(cursorpipe.__all__) <= set(dir(cursorpipe))


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = cursorpipe.NoSuchThing  # type: ignore[attr-defined]
    assert not hasattr(cursorpipe, "_private_guess")


def test_type_checking_imports_lazy_table_and_all_agree() -> None:
    """The three lists in ``__init__.py`` must name the same things, so adding an export in one
    place and forgetting another fails here rather than at a user's first attribute access."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    guarded: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level:
                    for alias in stmt.names:
                        guarded[alias.asname or alias.name] = "." * stmt.level + (stmt.module or "")
    assert guarded == cursorpipe._EXPORTS
    assert set(cursorpipe._EXPORTS) | {"__version__"} == set(cursorpipe.__all__)
