"""Model catalogue: REST ``GET {rest}/v1/models`` with the raw API key (the SDK's way, connect.md
§9.1), falling back to the RPC ``agent.v1.AgentService/GetUsableModels`` (§9.2)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import ProtocolError
from ...types import ModelInfo

__all__ = [
    "AUTO_MODEL_ID",
    "MODELS_PATH",
    "USABLE_MODELS_PATH",
    "parse_rest_models",
    "parse_usable_models",
    "resolve_model",
]

MODELS_PATH = "/v1/models"
USABLE_MODELS_PATH = "/agent.v1.AgentService/GetUsableModels"
#: connect.md §5.2: ``default`` is the auto router (CC maps ``auto`` to ``default``).
AUTO_MODEL_ID = "default"
_AUTO_NAMES = frozenset({"auto", "default"})


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_rest_models(doc: Any) -> list[ModelInfo]:
    """``{items: [{id, displayName, aliases?, parameters?, variants?}]}`` → ``ModelInfo`` (§9.1).

    ``parameters`` keeps the REST entries (``{id, displayName, values}``) and each variant as
    ``{"variant": {...}}`` so callers can see max-mode and default variants."""
    items = doc.get("items") if isinstance(doc, Mapping) else None
    if not isinstance(items, list):
        raise ProtocolError("The model list is not of the form {items: [...]}.")
    out: list[ModelInfo] = []
    for item in items:
        if not isinstance(item, Mapping) or not _str(item.get("id")):
            continue
        aliases = tuple(a for a in item.get("aliases") or () if isinstance(a, str) and a)
        params: list[Mapping[str, Any]] = [p for p in item.get("parameters") or () if isinstance(p, Mapping)]
        params += [{"variant": v} for v in item.get("variants") or () if isinstance(v, Mapping)]
        out.append(
            ModelInfo(
                id=item["id"],
                display_name=_str(item.get("displayName")) or item["id"],
                aliases=aliases,
                parameters=tuple(params),
            )
        )
    return out


def parse_usable_models(response: pb.GetUsableModelsResponse) -> list[ModelInfo]:
    """``GetUsableModelsResponse{models: [ModelDetails]}`` → ``ModelInfo`` (§9.2)."""
    out: list[ModelInfo] = []
    for m in response.models:
        if not m.model_id:
            continue
        aliases = [a for a in m.aliases if a]
        if m.display_model_id and m.display_model_id != m.model_id:
            aliases.append(m.display_model_id)
        out.append(
            ModelInfo(
                id=m.model_id,
                display_name=m.display_name or m.display_name_short or m.model_id,
                aliases=tuple(aliases),
                supports_thinking=True if m.HasField("thinking_details") else None,
            )
        )
    return out


def resolve_model(name: str, models: Iterable[ModelInfo]) -> str | None:
    """The canonical id to send for ``name`` (id or alias, case-insensitive), or ``None``.

    ``auto``/``default`` always resolve: to the listed id when the catalogue has one, else to
    ``default``, the auto router (connect.md §5.2)."""
    listed = list(models)
    for m in listed:
        if m.matches(name):
            return m.id
    if name.lower() in _AUTO_NAMES:
        return AUTO_MODEL_ID
    return None
