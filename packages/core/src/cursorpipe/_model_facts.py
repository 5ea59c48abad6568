"""What we know about Cursor's models without asking Cursor: context windows and capabilities.

Cursor's model list (connect.md §9.1, REST ``GET /v1/models``) carries ids, names and parameters but
no token limits, and ``AvailableModels``' ``context_token_limit`` (connect.md §9.2) is an IDE-only
call; so profiles come from this table, matched by id prefix. The numbers are the providers'
published context windows, rounded down; an unknown model gets a conservative default.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelFacts", "model_facts"]


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Context window, output size and capabilities of one model family."""

    context_window: int
    max_output_tokens: int
    image_inputs: bool = True
    reasoning: bool = True


_DEFAULT = ModelFacts(context_window=128_000, max_output_tokens=16_384, image_inputs=False, reasoning=False)

# Ordered: the first matching prefix wins, so specific prefixes come before general ones.
_TABLE: tuple[tuple[str, ModelFacts], ...] = (
    ("auto", ModelFacts(200_000, 32_000)),
    ("default", ModelFacts(200_000, 32_000)),
    ("composer", ModelFacts(200_000, 32_000, image_inputs=False)),
    ("claude", ModelFacts(200_000, 64_000)),
    ("sonnet", ModelFacts(200_000, 64_000)),
    ("opus", ModelFacts(200_000, 32_000)),
    ("gpt-4.1", ModelFacts(1_000_000, 32_768, reasoning=False)),
    ("gpt-4o", ModelFacts(128_000, 16_384, reasoning=False)),
    ("gpt-5", ModelFacts(272_000, 128_000)),
    ("o3", ModelFacts(200_000, 100_000)),
    ("o4", ModelFacts(200_000, 100_000)),
    ("gemini", ModelFacts(1_000_000, 65_536)),
    ("grok", ModelFacts(256_000, 32_000)),
    ("deepseek", ModelFacts(128_000, 32_000, image_inputs=False)),
    ("kimi", ModelFacts(128_000, 32_000, image_inputs=False)),
)


def model_facts(model: str) -> ModelFacts:
    """Facts for ``model`` (case-insensitive prefix match; a default for unknown models)."""
    name = model.strip().lower()
    for prefix, facts in _TABLE:
        if name.startswith(prefix):
            return facts
    return _DEFAULT
