"""Test configuration of the LangChain adapter's tests."""

from __future__ import annotations

import inspect

import pytest

#: Modules whose async tests share one module-scoped loop (see the module docstrings).
MODULE_LOOP_MODULES = frozenset(
    {"test_standard_integration_emulator", "test_chat_cursor_emulator", "test_live"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A module-level pytestmark would also mark the suite's sync tests, which pytest-asyncio
    # rejects; mark only the coroutine tests.
    for item in items:
        module = getattr(item, "module", None)
        function = getattr(item, "function", None)
        if module is None or function is None:
            continue
        if module.__name__.rsplit(".", 1)[-1] in MODULE_LOOP_MODULES and inspect.iscoroutinefunction(
            function
        ):
            item.add_marker(pytest.mark.asyncio(loop_scope="module"))
