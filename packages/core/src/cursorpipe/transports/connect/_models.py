"""Model catalogue: REST ``GET {rest}/v1/models`` with the raw API key (the SDK's way, connect.md
§9.1), falling back to the RPC ``agent.v1.AgentService/GetUsableModels`` (§9.2)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import ConfigurationError, ProtocolError
from ...types import ModelInfo

__all__ = [
    "AUTO_MODEL_ID",
    "MODELS_PATH",
    "USABLE_MODELS_PATH",
    "ModelChoice",
    "choose_model",
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


@dataclass(frozen=True)
class ModelChoice:
    """What goes into ``RequestedModel`` (connect.md §5.2): canonical id, variant parameters and
    ``max_mode``."""

    id: str
    parameters: tuple[tuple[str, str], ...] = ()
    max_mode: bool = False


_NAME = re.compile(r"\s*([^\[\]]+?)\s*(?:\[([^\[\]]*)\])?\s*")


def _split_name(name: str) -> tuple[str, list[tuple[str, str]]]:
    """``"claude-4.5-sonnet[thinking=true]"`` → ``("claude-4.5-sonnet", [("thinking", "true")])``."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ConfigurationError(
            f"Model name {name!r} is not of the form id or id[param=value,...].", code="invalid_model"
        )
    params: list[tuple[str, str]] = []
    for item in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"Model parameter {item!r} in {name!r} must be written param=value.", code="invalid_model"
            )
        params.append((key.strip(), value.strip()))
    return match.group(1), params


def choose_model(name: str, models: Iterable[ModelInfo]) -> ModelChoice | None:
    """Resolve ``name`` (id or alias, optionally with ``[param=value,...]`` variant parameters from
    the model list, §9.1) to a :class:`ModelChoice`, or ``None`` when the account has no such model.

    ``max_mode`` follows the SDK rule (§5.2): true when every listed variant matching the chosen
    parameters is flagged ``isMaxMode``. Unknown parameters or values raise ``ConfigurationError``
    naming the valid ones."""
    base, params = _split_name(name)
    listed = list(models)
    resolved = resolve_model(base, listed)
    if resolved is None:
        return None
    info = next((m for m in listed if m.id == resolved), None)
    declared = {str(p.get("id")): p for p in (info.parameters if info else ()) if "id" in p}
    for key, value in params:
        spec = declared.get(key)
        if spec is None:
            valid = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(
                f"Model {resolved!r} has no parameter {key!r} (valid: {valid}).", code="invalid_model"
            )
        values = [str(v.get("value")) for v in spec.get("values") or () if isinstance(v, Mapping)]
        if values and value not in values:
            raise ConfigurationError(
                f"Parameter {key!r} of model {resolved!r} takes one of: {', '.join(values)}.",
                code="invalid_model",
            )
    variants = [
        p["variant"] for p in (info.parameters if info else ()) if isinstance(p.get("variant"), Mapping)
    ]
    chosen = dict(params)
    matching = [
        v
        for v in variants
        if all(
            chosen.get(str(vp.get("id")), str(vp.get("value"))) == str(vp.get("value"))
            for vp in v.get("params") or ()
            if isinstance(vp, Mapping)
        )
    ]
    max_mode = bool(matching) and all(bool(v.get("isMaxMode")) for v in matching)
    return ModelChoice(resolved, tuple(params), max_mode)
