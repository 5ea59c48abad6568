"""Anthropic's model-listing shape (docs/anthropic.md §7), served on ``/v1/models`` when the client
sends ``anthropic-version`` (every Anthropic SDK does; OpenAI clients never do)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...types import ModelInfo

__all__ = ["ANTHROPIC_VERSION_HEADER", "model_json", "models_page"]

ANTHROPIC_VERSION_HEADER = "anthropic-version"


def model_json(info: ModelInfo, created: float) -> dict[str, Any]:
    """One model as Anthropic lists it. ``created_at`` is when this server started (Cursor's
    catalogue has no release dates), ``max_input_tokens`` / ``max_tokens`` where Cursor says."""
    data: dict[str, Any] = {
        "type": "model",
        "id": info.id,
        "display_name": info.display_name or info.id,
        "created_at": datetime.fromtimestamp(int(created), UTC).isoformat().replace("+00:00", "Z"),
        "lifecycle": "active",
    }
    if info.context_window is not None:
        data["max_input_tokens"] = info.context_window
    if info.max_output_tokens is not None:
        data["max_tokens"] = info.max_output_tokens
    return data


def models_page(models: list[ModelInfo], created: float) -> dict[str, Any]:
    """The whole catalogue as one page (``has_more`` false; Cursor's list is short)."""
    data = [model_json(m, created) for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
