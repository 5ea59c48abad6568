"""The notebooks' shared bootstrap: your Cursor account when ``CURSOR_API_KEY`` is set, else the emulator.

Each notebook starts with::

    from _offline import start_backend

    backend = start_backend()
    settings = backend.settings  # keyword arguments for CursorPipeConfig / ChatCursor / CursorLLM

and ends with ``backend.close()``. Offline, ``settings`` points the client at cursorpipe's Cursor
API emulator running on loopback in a background thread (real protocol, deterministic answers that
state what the emulated model saw). Live, ``settings`` is empty and everything comes from the
environment (``CURSOR_API_KEY``, ``CURSORPIPE_*``).

``answer_from_context`` is a scripted "model" for the LlamaIndex notebook: it answers a
retrieval-augmented question with the context sentence that best matches it, so a query engine's
answer reads like an answer while still coming only from what reached the model.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the emulator (distribution cursorpipe-testing) is imported only when offline
    from cursorpipe.testing.emulator import ReplyContext

__all__ = ["Backend", "answer_from_context", "start_backend"]


@dataclass
class Backend:
    """Where the notebook's client goes: ``settings`` to pass on, ``live`` when it is your account."""

    settings: dict[str, Any]
    live: bool
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def close(self) -> None:
        """Stop the emulator (if one was started)."""
        self._stack.close()


def start_backend(**behaviour: Any) -> Backend:
    """Use your Cursor account if ``CURSOR_API_KEY`` is set, else start the emulator.

    ``behaviour``: fields of the emulator's ``Behaviour`` (e.g. ``reply=answer_from_context``),
    ignored with your account. The emulator's URL is not printed: its port changes every run, and
    the notebooks' stored outputs are compared with fresh ones in CI.
    """
    if os.environ.get("CURSOR_API_KEY"):
        print("Using your Cursor account")
        return Backend(settings={}, live=True)
    from cursorpipe.testing.emulator import Behaviour, Emulator

    backend = Backend(settings={}, live=False)
    emu = backend._stack.enter_context(Emulator.start_in_thread(Behaviour(**behaviour)))
    backend.settings = {"strategy": "connect", "backend_url": emu.url, "api_key": emu.api_key}
    print("No CURSOR_API_KEY: using cursorpipe's offline Cursor API emulator")
    return backend


# LlamaIndex's default text-QA prompt puts the retrieved passages between two dashed lines and the
# question after "Query:"; the "context" chat mode puts them in the system prompt after "Context
# information is below." and the question is the user message.
_CONTEXT = re.compile(r"-{5,}\n(.*?)\n-{5,}", re.DOTALL)
_QUERY = re.compile(r"^Query:\s*(.+)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a an and the of in on at to is was were be by for from it its how what when who does do did
    she he they this that with as often""".split()
)


def _words(text: str) -> set[str]:
    # A crude stemmer is enough for a demo: "keeps" meets "keep", "logs" meets "log".
    return {w.removesuffix("s") for w in _WORD.findall(text.lower()) if w not in _STOP}


def answer_from_context(ctx: ReplyContext) -> str:
    """A scripted reply: the retrieved sentence sharing most words with the question.

    Without retrieved context (or with nothing matching) it falls back to the emulator's default
    replies (tool results, or a statement of what the model saw), so the other cells of a notebook
    behave as usual.
    """
    from cursorpipe.testing.emulator import expected_tools_reply, reply_for

    if ctx.tool_results:
        return expected_tools_reply(ctx.tool_results)
    found = _CONTEXT.search(ctx.text) or _CONTEXT.search(ctx.system_prompt)
    if found is None:
        return reply_for(ctx)
    query = _QUERY.search(ctx.text)
    question = _words(query.group(1) if query else ctx.text)
    passages = [p.strip() for p in re.split(r"\n\s*\n|\n", found.group(1)) if p.strip()]
    best = max(passages, key=lambda p: len(question & _words(p)), default="")
    if not best or not question & _words(best):
        return reply_for(ctx)
    return f"According to the context: {best}"
