"""notebooks/_offline.py: the notebooks' shared bootstrap and the LlamaIndex notebook's scripted reply."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from cursorpipe.testing.emulator import ReplyContext, ToolResult, expected_tools_reply, reply_for

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_offline", ROOT / "notebooks" / "_offline.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


offline = _load()

PASSAGES = (
    "The lighthouse at Skerry Point was built in 1871 from local granite.\n\n"
    "Its keeper, Morwenna Tregarthen, logs the weather every four hours.\n\n"
    "The lamp was electrified in 1926 and automated in 1989."
)
# The shape of LlamaIndex's default text-QA prompt.
QA_PROMPT = (
    "Context information is below.\n---------------------\n"
    f"{PASSAGES}\n---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\n"
    "Query: {query}\nAnswer: "
)


def _ctx(text: str, system: str = "", tool_results: tuple[ToolResult, ...] = ()) -> ReplyContext:
    return ReplyContext(
        text=text, turn=1, history=(), system_prompt=system, model="auto", tool_results=tool_results
    )


def test_answers_with_the_passage_matching_the_query() -> None:
    reply = offline.answer_from_context(_ctx(QA_PROMPT.format(query="When was the lamp automated?")))
    assert reply == "According to the context: The lamp was electrified in 1926 and automated in 1989."
    reply = offline.answer_from_context(_ctx(QA_PROMPT.format(query="Who is the keeper?")))
    assert "Morwenna Tregarthen" in reply


def test_reads_the_context_from_the_system_prompt_too() -> None:
    system = f"Context information is below.\n--------------------\n{PASSAGES}\n--------------------\n"
    reply = offline.answer_from_context(_ctx("What is the lighthouse built from?", system))
    assert reply.endswith("built in 1871 from local granite.")


def test_without_context_or_match_it_is_the_emulators_default_reply() -> None:
    plain = _ctx("Say hi in five words")
    assert offline.answer_from_context(plain) == reply_for(plain)
    unrelated = _ctx(QA_PROMPT.format(query="Quantum chromodynamics?"))
    assert offline.answer_from_context(unrelated) == reply_for(unrelated)
    results = (ToolResult(tool_call_id="c1", name="lamp_year", text="1989"),)
    after_tool = _ctx("when was the lamp automated?", tool_results=results)
    assert offline.answer_from_context(after_tool) == expected_tools_reply(results)


def test_start_backend_offline_serves_the_emulator_and_stops_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CURSOR_API_KEY", raising=False)
    backend = offline.start_backend(reply="scripted")
    try:
        assert not backend.live
        assert backend.settings["strategy"] == "connect"
        url = backend.settings["backend_url"]
        assert httpx.get(f"{url}/nowhere").status_code == 404  # a live emulator on loopback
        assert "offline Cursor API emulator" in capsys.readouterr().out
    finally:
        backend.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/nowhere")


def test_start_backend_live_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CURSOR_API_KEY", "key-from-the-environment")
    backend = offline.start_backend(reply="ignored with an account")
    assert backend.live
    assert backend.settings == {}
    assert capsys.readouterr().out == "Using your Cursor account\n"
    backend.close()
