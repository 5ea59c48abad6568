"""``llama_index.llms.cursorpipe``: ``CursorLLM``, a LlamaIndex LLM for the models of a Cursor
subscription, at LlamaIndex's conventional import path (the code lives here: ``base.py`` holds the
LLM, ``utils.py`` the message and event conversion).

    from llama_index.core import Settings
    from llama_index.llms.cursorpipe import CursorLLM

    Settings.llm = CursorLLM(model="auto")

This directory is a portion of the ``llama_index`` and ``llama_index.llms`` implicit namespace
packages: neither of them has an ``__init__.py`` here, so other LlamaIndex integrations keep
working side by side.
"""

from llama_index.llms.cursorpipe.base import CursorLLM

__all__ = ["CursorLLM"]
