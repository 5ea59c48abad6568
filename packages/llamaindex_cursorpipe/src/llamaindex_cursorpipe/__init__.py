"""LlamaIndex integration of cursorpipe: ``CursorLLM``, an LLM for the models of a Cursor
subscription. Also importable as ``llama_index.llms.cursorpipe``.

    from llama_index.core import Settings
    from llamaindex_cursorpipe import CursorLLM

    Settings.llm = CursorLLM(model="auto")
"""

from __future__ import annotations

from .base import CursorLLM

__version__ = "0.1.0"

__all__ = ["CursorLLM", "__version__"]
