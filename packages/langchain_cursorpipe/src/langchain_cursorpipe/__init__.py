"""LangChain integration of cursorpipe: ``ChatCursor``, a chat model for the models of a Cursor
subscription.

    from langchain_cursorpipe import ChatCursor

    llm = ChatCursor(model="auto")
    print(llm.invoke("Say hi").content)
"""

from __future__ import annotations

from .chat_models import ChatCursor

__version__ = "0.1.0"

__all__ = ["ChatCursor", "__version__"]
