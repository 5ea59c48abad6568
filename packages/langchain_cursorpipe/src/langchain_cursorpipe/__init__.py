"""LangChain integration of cursorpipe: ``ChatCursor``."""

__all__: list[str] = []
