"""``cursorpipe doctor --live`` (issue 11): the six checks of docs/live-dialect.md ("Live checks").

Offline, pointed at the strict emulator (``CURSORPIPE_BACKEND_URL``): every variant must come out as
the emulator's rules say it should, which proves the probe tells working choices from failing ones.
The ``live`` tests run the same checks against real Cursor (skipped without ``CURSOR_API_KEY``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cursorpipe import CursorPipeConfig, cli
from cursorpipe._doctor_live import run_live_checks
from cursorpipe.testing.emulator import Behaviour, Emulator

LIVE_KEY = os.environ.get("CURSOR_API_KEY", "")  # read before tests/conftest.py scrubs it
LIVE_BACKEND = os.environ.get("CURSOR_BACKEND_URL", "https://api2.cursor.sh")
LIVE_MODEL = os.environ.get("CURSORPIPE_LIVE_MODEL", "auto")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator.start_in_thread() as e:
        monkeypatch.setenv("CURSORPIPE_BACKEND_URL", e.url)
        monkeypatch.setenv("CURSOR_API_KEY", e.api_key)
        monkeypatch.setenv("CURSORPIPE_STRATEGY", "connect")
        yield e


def _by_variant(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in report["results"]}


def test_doctor_live_against_the_strict_emulator(emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = Path("live.json")
    assert cli.main(["doctor", "--live", "--report", str(report_path)]) == 0
    captured = capsys.readouterr()
    report = json.loads(report_path.read_text(encoding="utf-8"))
    results = _by_variant(report)
    # every variant was announced on stderr before its turns ran
    announced = [ln for ln in captured.err.splitlines() if ln.startswith("cursorpipe doctor --live: ")]
    ran = [r for r in report["results"] if r["variant"] != "skipped"]
    assert len(announced) == len(ran) + 1  # + the opening announcement
    # no hidden retries: one run per completed turn, plus the refused turn of each failed variant
    refused_variants = sum(1 for r in ran if not r["completed"])
    assert len(emu.runs) == sum(r["turns"] for r in ran) + refused_variants
    # the table names every variant and marks cursorpipe's defaults
    for r in ran:
        assert r["variant"] in captured.out
    assert "* cli identity" in captured.out

    def works(name: str) -> None:
        r = results[name]
        assert r["completed"] and r["honoured"] is True and r["verdict"] == "works", r

    # 1. both identities chat
    works("cli identity")
    works("sdk identity")
    # 2. the system prompt as rules works; custom_system_prompt is refused for a cli client and
    #    accepted (and honoured) from the sdk client type, as the emulator's rule says
    works("rule + cloud_rule + system message (cli)")
    refused = results["custom_system_prompt (cli)"]
    assert not refused["completed"] and "unknown option '--system-prompt'" in refused["error"]
    works("custom_system_prompt (sdk)")
    # 3. memory: root prompt messages remember, conversation_history is lost
    works("history in root_prompt_messages_json")
    lost = results["history in conversation_history"]
    assert lost["completed"] and lost["honoured"] is False and lost["turns"] == 3
    assert lost["verdict"] == "completes, earlier turns lost"
    # 4. tools: the live dialect calls with the integer intact; an empty allowed-tools header hides it
    works("MCP family + tools in request context")
    hidden = results["allowed-tools header empty"]
    assert hidden["completed"] and hidden["verdict"] == "completes, tool never called"
    works("tools only in mcp_tools")
    # the same tool turn in ASK mode: the strict emulator (live-dialect.md row 8) hides the tools
    ask = results["ASK mode with tools"]
    assert ask["completed"] and ask["honoured"] is False and ask["wire"] == {"mode": "ask"}
    assert ask["verdict"] == "completes, tool never called"
    assert "ASK mode with tools" in captured.out and "completes, tool never called" in captured.out
    ask_runs = [r for r in emu.runs if r.mode == "ask" and r.tools_offered]
    assert ask_runs and all(r.tools_visible == [] for r in ask_runs)
    # 5. a session survives only when the stream is read to its end
    works("read to the end-stream after turn_ended")
    dropped = results["drop the stream at turn_ended"]
    assert not dropped["completed"] and "Blob not found" in dropped["error"]
    # 6. the emulator reports cache figures inside input_tokens, as the live service does (row 13)
    (cache,) = [r for r in report["results"] if r["check"] == "6 cached usage"]
    assert cache["completed"] and cache["honoured"] is True, cache
    assert "includes cache" in cache["verdict"] and cache["usage"]["cache_read_tokens"] > 0
    # the report is attachable: versions, backend, no credential
    assert report["backend_url"] == emu.url and report["cursorpipe"]
    text = report_path.read_text(encoding="utf-8")
    assert emu.api_key not in text and "crsr_" not in text and "Bearer" not in text


def test_doctor_without_live_runs_no_turn(emu: Emulator) -> None:
    assert cli.main(["doctor"]) == 0
    assert emu.runs == []
    assert not Path("cursorpipe-live-report.json").exists()


def test_doctor_live_without_credentials_runs_no_turn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Emulator.start_in_thread() as emu:
        monkeypatch.setenv("CURSORPIPE_BACKEND_URL", emu.url)
        assert cli.main(["doctor", "--live"]) == 1
        assert emu.runs == []
    assert "no live turn was run" in capsys.readouterr().err


def test_doctor_live_fails_when_a_default_choice_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an emulator that considers cursorpipe's cli build outdated: every cli variant is refused
    with Emulator.start_in_thread(Behaviour(min_cli_version="2099.01.01")) as emu:
        monkeypatch.setenv("CURSORPIPE_BACKEND_URL", emu.url)
        monkeypatch.setenv("CURSOR_API_KEY", emu.api_key)
        assert cli.main(["doctor", "--live", "--report", "r.json"]) == 1
    out = capsys.readouterr().out
    assert "default choice(s) failed" in out and "1 plain chat" in out
    results = _by_variant(json.loads(Path("r.json").read_text(encoding="utf-8")))
    assert results["sdk identity"]["verdict"] == "works"  # the other identity still works
    assert "OutdatedClientError" in results["cli identity"]["error"]


# -- against real Cursor ------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.allow_hosts(["api2.cursor.sh", "api.cursor.com", "127.0.0.1", "::1", "localhost"])
@pytest.mark.timeout(900)
async def test_live_dialect_checks_against_cursor() -> None:
    """The same checks against the live service: cursorpipe's default choices must work there."""
    import io

    config = CursorPipeConfig(strategy="connect", api_key=LIVE_KEY, backend_url=LIVE_BACKEND)
    err = io.StringIO()
    results = await run_live_checks(config, model=LIVE_MODEL, err=err)
    defaults = [r for r in results if r.default and not r.verdict.startswith("skipped")]
    assert defaults, "no default variant ran"
    for r in defaults:
        assert r.completed and r.honoured is not False, (r.check, r.variant, r.verdict, r.error)
    assert err.getvalue().count("cursorpipe doctor --live: ") == len(
        [r for r in results if r.turns or r.error]
    )
