"""``llama_index.llms.cursorpipe``: LlamaIndex's conventional import path for ``CursorLLM``.

This directory is a portion of the ``llama_index`` and ``llama_index.llms`` implicit namespace
packages: neither of them has an ``__init__.py`` here, so other LlamaIndex integrations keep
working side by side.
"""

from llamaindex_cursorpipe import CursorLLM

__all__ = ["CursorLLM"]
