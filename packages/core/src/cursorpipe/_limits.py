"""Client-side output limits shared by every surface: stop sequences and ``max_tokens``.

Cursor's agent API has no stop or max-token parameter for chat turns, so cursorpipe enforces both
on the stream itself (and cancels the upstream run once a limit is hit). Text that might be the
start of a stop sequence is held back until it is known not to be one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._constants import CHARS_PER_TOKEN_ESTIMATE

__all__ = ["OutputLimiter"]


class OutputLimiter:
    """Feed text deltas; get back the text to emit and whether the stream must stop."""

    def __init__(self, stop: Sequence[str] | None = None, max_tokens: int | None = None) -> None:
        self._stops = [s for s in (stop or ()) if s]
        # The same 4-characters-per-token rule as estimate_tokens(), so usage and cut agree.
        self._max_chars = None if max_tokens is None else max(0, int(max_tokens * CHARS_PER_TOKEN_ESTIMATE))
        self._held = ""
        self._emitted_chars = 0
        self.emitted_text: list[str] = []
        self.reason: str | None = None  # "stop" or "length" once a limit was hit

    @property
    def active(self) -> bool:
        """Whether any limit is configured."""
        return bool(self._stops) or self._max_chars is not None

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, done). ``done`` means: stop reading the stream."""
        if self.reason is not None:
            return "", True
        buf = self._held + text
        self._held = ""
        if self._stops:
            cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
            if cut >= 0:
                return self._emit(buf[:cut], "stop")
            keep = 0
            for s in self._stops:
                for k in range(min(len(s) - 1, len(buf)), 0, -1):
                    if buf.endswith(s[:k]):
                        keep = max(keep, k)
                        break
            if keep:
                buf, self._held = buf[:-keep], buf[-keep:]
        return self._emit(buf, None)

    def flush(self) -> str:
        """At the natural end of the stream: the held-back text (it was no stop sequence)."""
        held, self._held = self._held, ""
        return self._emit(held, None)[0] if held else ""

    def _emit(self, text: str, reason: str | None) -> tuple[str, bool]:
        if self._max_chars is not None and self._emitted_chars + len(text) > self._max_chars:
            text = text[: self._max_chars - self._emitted_chars]
            reason = reason or "length"
        self._emitted_chars += len(text)
        if text:
            self.emitted_text.append(text)
        if reason is not None:
            self.reason = reason
            return text, True
        return text, False
