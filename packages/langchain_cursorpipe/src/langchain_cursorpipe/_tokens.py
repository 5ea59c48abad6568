"""An offline token counter.

LangChain's default ``get_token_ids`` downloads a GPT-2 tokenizer from the Hugging Face hub, which
fails offline (integrations.md §0). Cursor serves models from several vendors with different
tokenizers and publishes none of them, so any count is an estimate. This one splits text the way
byte-pair tokenizers roughly do (words, numbers, punctuation, long words in pieces of about four
characters) and gives each piece a stable id, so counts are deterministic, need no files and stay
close to cursorpipe's usage estimates (about four characters per token).
"""

from __future__ import annotations

import re
import zlib

__all__ = ["count_tokens", "token_ids"]

# A word with its leading space, a run of digits, or one other non-space character.
_PIECES = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]|\s+", re.UNICODE)
_CHUNK = 4
_VOCAB = 100_000


def _split(text: str) -> list[str]:
    pieces: list[str] = []
    for match in _PIECES.finditer(text):
        piece = match.group()
        if len(piece) <= _CHUNK + 1:
            pieces.append(piece)
            continue
        pieces.extend(piece[i : i + _CHUNK] for i in range(0, len(piece), _CHUNK))
    return pieces


def token_ids(text: str) -> list[int]:
    """Stable pseudo token ids of ``text`` (one per estimated token)."""
    return [zlib.crc32(p.encode("utf-8")) % _VOCAB for p in _split(text)]


def count_tokens(text: str) -> int:
    """Estimated number of tokens in ``text``."""
    return len(_split(text))
