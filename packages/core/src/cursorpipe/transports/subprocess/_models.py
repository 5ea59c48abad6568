"""Parse the text of ``agent models`` / ``agent --list-models`` (acp.md §6.5).

The output is a header (``Available models``), a blank line, one ``<id> - <Label>`` line per model
with optional `` (current)`` / `` (default)`` markers (ids may contain brackets), a blank line and
a ``Tip: …`` line, possibly with ANSI codes. The original cursorpipe returned every non-empty line,
header and tip included (acp.md §1.5); here only model lines become models. Unauthenticated, the
CLI prints ``Error: Authentication required. …`` instead (and may still exit 0, acp.md §1.5), which
is reported as an error line for the caller to classify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...types import ModelInfo

__all__ = ["ModelsListing", "parse_models_output", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(?:\x07|\x1b\\)")
_MODEL_LINE = re.compile(
    r"^(?P<id>\S(?:.*?\S)?) +- +(?P<label>.*?)(?P<markers>(?:\s*\((?:current|default)\))*)\s*$"
)
_MARKER = re.compile(r"\((current|default)\)")


@dataclass
class ModelsListing:
    """Parsed ``agent models`` output."""

    models: list[ModelInfo] = field(default_factory=list)
    current: str | None = None
    default: str | None = None
    error_lines: list[str] = field(default_factory=list)
    ignored_lines: list[str] = field(default_factory=list)


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def parse_models_output(text: str) -> ModelsListing:
    """Models (and markers, error lines) from the CLI's text output."""
    listing = ModelsListing()
    seen: set[str] = set()
    for raw in strip_ansi(text).splitlines():
        line = raw.strip()
        if not line:
            continue
        low = line.lower()
        if low.rstrip(":") in ("available models", "models"):
            continue
        if low.startswith("tip:"):
            continue
        if low.startswith(("error", "⚠", "warning")):
            listing.error_lines.append(line)
            continue
        match = _MODEL_LINE.match(line)
        if not match:
            listing.ignored_lines.append(line)
            continue
        model_id = match.group("id").strip()
        label = match.group("label").strip() or model_id
        markers = set(_MARKER.findall(match.group("markers") or ""))
        if "current" in markers:
            listing.current = model_id
        if "default" in markers:
            listing.default = model_id
        if model_id in seen:
            continue
        seen.add(model_id)
        aliases = ("default",) if model_id == "auto" else ()
        listing.models.append(ModelInfo(id=model_id, display_name=label, aliases=aliases))
    return listing
