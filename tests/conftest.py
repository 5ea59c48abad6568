"""Root test configuration: offline by default (sockets only to loopback, via pytest-socket's
--allow-hosts in pyproject), no Cursor credentials leaking in from the developer's environment."""

from __future__ import annotations

import os

import pytest

_CRED_VARS = (
    "CURSOR_API_KEY",
    "CURSORPIPE_API_KEY",
    "CURSOR_AUTH_TOKEN",
    "CURSORPIPE_AUTH_TOKEN",
    "CURSOR_BACKEND_URL",
    "CURSORPIPE_BACKEND_URL",
)

#: Real credentials, captured before the per-test scrub, for `live` tests only.
LIVE_API_KEY = os.environ.get("CURSOR_API_KEY", "")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith("CURSORPIPE_") or name in _CRED_VARS:
            monkeypatch.delenv(name, raising=False)
    # A .env in the working directory must not leak into tests; nor must the user's CLI login.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LIVE_API_KEY:
        return
    skip = pytest.mark.skip(reason="live test: set CURSOR_API_KEY to run against real Cursor")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)
