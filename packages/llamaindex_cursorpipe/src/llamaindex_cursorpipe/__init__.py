"""``llamaindex_cursorpipe``: a thin alias of ``llama_index.llms.cursorpipe``, where ``CursorLLM``
lives (LlamaIndex's conventional layout). This name stays importable for code written against it
and holds the distribution's version.

    from llama_index.core import Settings
    from llamaindex_cursorpipe import CursorLLM  # the same class as llama_index.llms.cursorpipe's

    Settings.llm = CursorLLM(model="auto")
"""

from __future__ import annotations

from llama_index.llms.cursorpipe import CursorLLM

__version__ = "0.1.0"

__all__ = ["CursorLLM", "__version__"]
