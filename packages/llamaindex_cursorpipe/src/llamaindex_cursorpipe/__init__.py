"""LlamaIndex integration of cursorpipe: ``CursorLLM``."""

__all__: list[str] = []
