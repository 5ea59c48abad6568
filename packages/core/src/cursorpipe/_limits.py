"""Client-side output limits shared by every surface: stop sequences and ``max_tokens``.

Cursor's agent API has no stop or max-token parameter for chat turns, so cursorpipe enforces both
on the stream itself (and cancels the upstream run once a limit is hit). Text that might be the
start of a stop sequence is held back until it is known not to be one.

Counting tokens: where the transport streams Cursor's own running output-token count (connect's
``token_delta``, see :class:`~cursorpipe.types.TokenCountDelta`), the limit is ``max_tokens`` times
the characters per token that count shows for this answer; elsewhere four characters per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._constants import CHARS_PER_TOKEN_ESTIMATE

__all__ = ["DEFAULT_MAX_TOKENS", "OutputLimiter", "is_default_max_tokens"]

#: Bounds for the measured characters-per-token ratio: a count that disagrees wildly with the
#: text (connect.md §7 marks token_delta [S]: it need not match the final usage) must not turn the
#: limit into a cut after a few characters, nor into no limit at all.
_MIN_CHARS_PER_TOKEN, _MAX_CHARS_PER_TOKEN = 1.5, 12.0


class _DefaultMaxTokens(int):
    """``2048`` marked as "the caller did not choose it" (it prints and compares as 2048)."""

    __slots__ = ()


#: The default ``max_tokens`` of ``generate``/``chat``/``complete``. Its identity tells the client
#: that nobody chose this limit, so an answer it cuts is logged as a WARNING (issue 15: a cut by
#: an explicit limit is what the caller asked for; a cut by the default is a surprise).
DEFAULT_MAX_TOKENS: int = _DefaultMaxTokens(2048)


def is_default_max_tokens(value: int | None) -> bool:
    """Whether ``value`` is :data:`DEFAULT_MAX_TOKENS` itself (not an explicit 2048)."""
    return isinstance(value, _DefaultMaxTokens)


class OutputLimiter:
    """Feed text deltas; get back the text to emit and whether the stream must stop."""

    def __init__(self, stop: Sequence[str] | None = None, max_tokens: int | None = None) -> None:
        self._stops = [s for s in (stop or ()) if s]
        self._max_tokens = max_tokens
        self._held = ""
        self._emitted_chars = 0
        self._seen_chars = 0  # all answer text received, emitted or not
        self._counted_chars = 0  # the part of it Cursor's count covers (text seen at the last count)
        self.counted_tokens = 0  # Cursor's running output-token count, where the transport has one
        self.reason: str | None = None  # "stop" or "length" once a limit was hit
        # ``_max_chars`` changes only when a count arrives: kept here rather than recomputed
        # through two properties for every delta (issue 16: the per-event path).
        self._limit_chars = self._max_chars

    @property
    def active(self) -> bool:
        """Whether any limit is configured."""
        return bool(self._stops) or self._max_tokens is not None

    @property
    def chars_per_token(self) -> float:
        """Cursor's count for this answer so far when there is one, else the 4-character rule
        that ``estimate_tokens()`` uses (so usage and cut agree)."""
        if self.counted_tokens > 0 and self._counted_chars > 0:
            ratio = self._counted_chars / self.counted_tokens
            return min(_MAX_CHARS_PER_TOKEN, max(_MIN_CHARS_PER_TOKEN, ratio))
        return CHARS_PER_TOKEN_ESTIMATE

    @property
    def _max_chars(self) -> int | None:
        if self._max_tokens is None:
            return None
        return max(0, int(self._max_tokens * self.chars_per_token))

    def output_tokens(self) -> int:
        """Output tokens of the emitted text, by the same ratio the limit uses."""
        if not self._emitted_chars:
            return 0
        return max(1, round(self._emitted_chars / self.chars_per_token))

    def count(self, tokens: int) -> None:
        """Add Cursor's count of output tokens streamed since the last count.

        A count is taken to cover the text received before it: the emulator sends each
        ``token_delta`` right after its ``text_delta`` and no capture shows Cursor's order (connect.md
        §7 row 8 is [S]); the other order only shifts the ratio by one delta, and it is bounded.
        Counts before the first answer text are ignored: whether they include thinking or tool
        arguments is not known, and counting those against the answer would cut it early."""
        if tokens > 0 and self._seen_chars > 0:
            self.counted_tokens += tokens
            self._counted_chars = self._seen_chars
            self._limit_chars = self._max_chars

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, done). ``done`` means: stop reading the stream."""
        if self.reason is not None:
            return "", True
        size = len(text)
        self._seen_chars += size
        if not self._stops:
            limit = self._limit_chars
            if limit is None or self._emitted_chars + size <= limit:
                self._emitted_chars += size  # the usual delta: under the limit, emitted whole
                return text, False
            return self._emit(text, None)
        buf = self._held + text
        self._held = ""
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
        if self._max_tokens is not None:
            limit = self._limit_chars
            if limit is not None and self._emitted_chars + len(text) > limit:
                text = text[: max(0, limit - self._emitted_chars)]
                reason = reason or "length"
        self._emitted_chars += len(text)
        if reason is not None:
            self.reason = reason
            return text, True
        return text, False
