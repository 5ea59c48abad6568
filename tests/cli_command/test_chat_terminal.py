"""``cursorpipe chat`` as a person uses it: the real command in a pseudo-terminal (pexpect)
against the emulator, checking what the terminal shows.

The emulator echoes the prompt and reports the conversation memory it saw
(``expected_reply(text, earlier=, first=, turns=)``), so the screen proves both the answer and the session.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cursorpipe._chat_repl import Printer, use_color
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply

pexpect = pytest.importorskip("pexpect")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX"),
]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
PROMPT = ">"


@pytest.fixture(scope="module")
def slow_emu() -> Iterator[Emulator]:
    # Slow enough that Ctrl-C lands in the middle of an answer.
    with Emulator.start_in_thread(Behaviour(token_delay_s=0.25, chunks=16)) as emulator:
        yield emulator


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURSOR", "NO_COLOR"))}
    env.update(
        HOME=str(tmp_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        TERM="xterm-256color",
        # pexpect does not answer the cursor-position queries a real terminal answers.
        PROMPT_TOOLKIT_NO_CPR="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _spawn(args: list[str], env: dict[str, str]) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cursorpipe.cli", "chat", *args],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 220),
    )
    child.logfile_read = io.StringIO()
    return child


def _screen(child: pexpect.spawn) -> str:
    """Everything the terminal showed so far, without escape sequences."""
    return ANSI.sub("", child.logfile_read.getvalue())


def _ask(child: pexpect.spawn, text: str, answer: str) -> None:
    child.sendline(text)
    child.expect_exact(answer)
    child.expect_exact("[usage]")
    child.expect_exact(PROMPT)


def _finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None
    assert "Traceback" not in _screen(child)
    return int(child.exitstatus)


def test_conversation_ctrl_c_keeps_memory_and_ctrl_d_exits_0(slow_emu: Emulator, tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        CURSORPIPE_BACKEND_URL=slow_emu.url,
        CURSOR_API_KEY=slow_emu.api_key,
        CURSORPIPE_STRATEGY="connect",
    )
    child = _spawn([], env)
    child.expect_exact("Ctrl-D to quit")
    child.expect_exact(PROMPT)
    _ask(child, "remember the word apple", expected_reply("remember the word apple"))

    child.sendline("tell me a long story")
    child.expect_exact("Emulated reply")  # the answer has started streaming
    child.sendintr()
    child.expect_exact("[interrupted")
    child.expect_exact(PROMPT)
    shown = _screen(child)
    # The interrupted answer stopped part-way: its full text never reached the screen.
    apple = "remember the word apple"
    assert expected_reply("tell me a long story", earlier=2, first=apple, turns=1) not in shown

    # The conversation survived the interrupt: the model still sees the first turn.
    _ask(child, "what was the word", expected_reply("what was the word", earlier=2, first=apple, turns=1))
    child.sendeof()
    assert _finish(child) == 0
    # The prompt history persisted for the next run, privately.
    history = tmp_path / "state" / "cursorpipe" / "chat_history"
    assert "remember the word apple" in history.read_text()
    assert history.stat().st_mode & 0o077 == 0


def test_ctrl_c_at_the_prompt_exits_cleanly(tmp_path: Path) -> None:
    child = _spawn(["--emulator", "--no-history"], _env(tmp_path))
    child.expect_exact("Ctrl-D to quit")
    child.expect_exact(PROMPT)
    child.sendintr()
    assert _finish(child) == 0
    assert not (tmp_path / "state").exists()


def test_local_commands_and_a_real_system_prompt(tmp_path: Path) -> None:
    child = _spawn(["--emulator", "--no-history", "-s", "answer briefly"], _env(tmp_path))
    child.expect_exact("system prompt set")
    child.expect_exact(PROMPT)
    # -s is a system prompt on every turn (the emulator marks answers that carried one).
    _ask(child, "one", expected_reply("one", system="answer briefly"))
    _ask(child, "two", expected_reply("two", earlier=2, first="one", turns=1, system="answer briefly"))

    child.sendline("/help")
    child.expect_exact("/reset")
    child.expect_exact(PROMPT)
    child.sendline("/system")
    child.expect_exact("system prompt: 'answer briefly'")
    child.expect_exact(PROMPT)
    child.sendline("/system off")
    child.expect_exact("[system prompt cleared]")
    child.expect_exact(PROMPT)
    _ask(child, "three", expected_reply("three", earlier=4, first="one", turns=2))

    child.sendline("/reset")
    child.expect_exact("[new conversation]")
    child.expect_exact(PROMPT)
    _ask(child, "fresh", expected_reply("fresh"))

    child.sendline("/model gpt-5")
    child.expect_exact("[new conversation with model gpt-5]")
    child.expect_exact(PROMPT)
    child.sendline("on gpt")
    child.expect_exact(expected_reply("on gpt"))
    child.expect_exact("model gpt-5")
    child.expect_exact(PROMPT)

    child.sendline("/bogus")
    child.expect_exact("unknown command /bogus")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    assert _finish(child) == 0
    # Local commands never reached the model.
    assert "Emulated reply to: /" not in _screen(child)


def test_colours_on_a_terminal_and_none_with_no_color(tmp_path: Path) -> None:
    coloured = _spawn(["--emulator", "--no-history"], _env(tmp_path))
    coloured.expect_exact(PROMPT)
    _ask(coloured, "hi", expected_reply("hi"))
    coloured.sendeof()
    assert _finish(coloured) == 0
    raw = coloured.logfile_read.getvalue()
    assert "\x1b[2m[usage]" in raw and "\x1b[2m[thinking]" in raw
    # The spinner ran until the first token and erased its line before the answer appeared.
    spinner_at = raw.index("waiting for the model")
    assert raw.index("\r\x1b[K", spinner_at) < raw.index("[thinking]", spinner_at)

    plain = _spawn(["--emulator", "--no-history"], _env(tmp_path, NO_COLOR="1"))
    plain.expect_exact(PROMPT)
    _ask(plain, "hi", expected_reply("hi"))
    plain.sendeof()
    assert _finish(plain) == 0
    raw = plain.logfile_read.getvalue()
    assert "[usage]" in raw and "\x1b[2m[usage]" not in raw
    assert "\x1b[2m[thinking]" not in raw and "\x1b[1mcursorpipe chat" not in raw


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_spinner_or_escapes_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from cursorpipe import cli

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped question\n"))
    assert cli.main(["chat", "--emulator"]) == 0
    assert out.getvalue() == expected_reply("piped question") + "\n"
    assert "waiting for the model" not in err.getvalue() and "\x1b" not in out.getvalue() + err.getvalue()


def test_colour_rules() -> None:
    assert use_color(_TTY(), {})
    assert not use_color(_TTY(), {"NO_COLOR": "1"})
    assert not use_color(_TTY(), {"TERM": "dumb"})
    assert not use_color(io.StringIO(), {})  # a pipe or a file gets no escapes
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(out, err, show_thinking=True)
    printer.thinking("hmm")
    printer.text("answer")
    printer.finish(None, "auto", 0.1, "stop")
    assert "\x1b" not in out.getvalue() + err.getvalue()
    assert out.getvalue() == "answer\n" and err.getvalue() == "[thinking] hmm\n"


def test_readline_fallback_without_prompt_toolkit(tmp_path: Path) -> None:
    # Without the cursorpipe[cli] extra the chat still edits lines (GNU readline) and keeps history.
    code = (
        "import sys; sys.modules['prompt_toolkit'] = None; from cursorpipe.cli import main; "
        "sys.exit(main(['chat', '--emulator']))"
    )
    child = pexpect.spawn(
        sys.executable, ["-c", code], env=_env(tmp_path), encoding="utf-8", timeout=30, dimensions=(40, 220)
    )
    child.logfile_read = io.StringIO()
    child.expect_exact(PROMPT)
    _ask(child, "via readline", expected_reply("via readline"))
    child.sendintr()
    assert _finish(child) == 0
    assert "via readline" in (tmp_path / "state" / "cursorpipe" / "chat_history.readline").read_text()
