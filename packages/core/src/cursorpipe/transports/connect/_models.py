"""Model catalogue: REST ``GET {rest}/v1/models`` with the raw API key (the SDK's way, connect.md
§9.1), falling back to the RPC ``agent.v1.AgentService/GetUsableModels`` (§9.2), and the
resolution of what a user names to what ``Run`` accepts (live-dialect.md row 14).

Row 14 (confidence B): ``GetUsableModels`` lists per-effort *sibling slugs* (``gpt-5.2-high``)
that ``Run`` rejects with a bare ``resource_exhausted``; the effort goes in
``RequestedModel.parameters`` next to the family id instead, and a bare ``composer-*`` runs on the
Fast lane unless ``fast=false`` is sent. So the catalogue folds sibling slugs into their family,
and :func:`choose_model` turns a family id, an alias, a sibling or legacy slug, or ``auto`` plus an
optional OpenAI ``reasoning_effort`` into one :class:`ModelChoice`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..._proto.agent.v1 import agent_pb2 as pb
from ...errors import ConfigurationError, ProtocolError
from ...types import ModelInfo

__all__ = [
    "AUTO_MODEL_ID",
    "EFFORT_LEVELS",
    "MODELS_PATH",
    "USABLE_MODELS_PATH",
    "ModelChoice",
    "choose_model",
    "parse_rest_models",
    "parse_usable_models",
    "resolve_model",
]

log = logging.getLogger("cursorpipe.connect")

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


#: Effort words, weakest first: OpenAI's ``reasoning_effort`` names plus ``max`` (Cursor's top
#: level on some models, connect.md §9.1 variants).
EFFORT_LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
#: Parameter ids that carry a model's effort, most specific first. acp.md §3.2 shows ``reasoning``
#: (GPT/codex models) and ``effort`` (Claude, Grok); the other two are defensive [G].
_EFFORT_PARAMS = ("reasoning_effort", "reasoning", "effort", "thinking_level")
_LEGACY_PREFIX = "cursor-"  # live-dialect.md row 14: legacy slugs like cursor-grok-4.6-medium


def _split_sibling(model_id: str) -> tuple[str, str] | None:
    """``"gpt-5.2-high"`` → ``("gpt-5.2", "high")``; ``None`` when the id ends in no effort word."""
    base, sep, level = model_id.rpartition("-")
    if sep and base and level.lower() in EFFORT_LEVELS:
        return base, level.lower()
    return None


def _guess_effort_param(family: str) -> str:
    # [G] GetUsableModels names no parameter ids. acp.md §3.2 shows GPT/codex variants keyed
    # `reasoning` and the others `effort`; the REST catalogue (tried first) is authoritative.
    low = family.lower()
    return "reasoning" if low.startswith(("gpt-", "o1", "o3", "o4")) or "codex" in low else "effort"


def parse_usable_models(response: pb.GetUsableModelsResponse) -> list[ModelInfo]:
    """``GetUsableModelsResponse{models: [ModelDetails]}`` → ``ModelInfo`` (§9.2), with per-effort
    sibling slugs folded into their family (row 14): ``gpt-5.2``, ``gpt-5.2-low`` and
    ``gpt-5.2-high`` become one ``gpt-5.2`` that declares an effort parameter with the levels seen.
    A family whose bare id is not listed is still the id sent [G: row 14 says the siblings are
    rejected, so the family id is the only candidate]."""
    details = [m for m in response.models if m.model_id]
    listed = {m.model_id for m in details}
    bases: dict[str, list[str]] = {}
    for m in details:
        split = _split_sibling(m.model_id)
        if split is not None:
            bases.setdefault(split[0], []).append(split[1])
    # A lone "x-high" with neither "x" nor another sibling is a name, not a sibling.
    families = {b: levels for b, levels in bases.items() if b in listed or len(levels) > 1}
    out: dict[str, ModelInfo] = {}
    for m in details:
        split = _split_sibling(m.model_id)
        family = split[0] if split is not None and split[0] in families else m.model_id
        aliases = [a for a in m.aliases if a]
        if m.display_model_id and m.display_model_id != m.model_id:
            aliases.append(m.display_model_id)
        if family != m.model_id:
            aliases.append(m.model_id)
        known = out.get(family)
        if known is None:
            params: tuple[Mapping[str, Any], ...] = ()
            if family in families:
                levels = sorted(set(families[family]), key=EFFORT_LEVELS.index)
                params = (
                    {
                        "id": _guess_effort_param(family),
                        "values": [{"value": v} for v in levels],
                        "inferred": True,
                    },
                )
            display = m.display_name or m.display_name_short or m.model_id
            if family != m.model_id:
                display = family
            out[family] = ModelInfo(
                id=family,
                display_name=display,
                aliases=tuple(aliases),
                supports_thinking=True if m.HasField("thinking_details") else None,
                parameters=params,
            )
        else:
            merged = tuple(dict.fromkeys([*known.aliases, *aliases]))
            display = known.display_name
            if family == m.model_id:
                display = m.display_name or m.display_name_short or known.display_name
            out[family] = ModelInfo(
                id=family,
                display_name=display,
                aliases=merged,
                supports_thinking=known.supports_thinking
                or (True if m.HasField("thinking_details") else None),
                parameters=known.parameters,
            )
    return list(out.values())


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


def _effort_spec(info: ModelInfo | None) -> Mapping[str, Any] | None:
    """The parameter of ``info`` that carries effort (``reasoning``, ``effort``...), if any."""
    declared = {str(p.get("id")).lower(): p for p in (info.parameters if info else ()) if "id" in p}
    for pid in _EFFORT_PARAMS:
        if pid in declared:
            return declared[pid]
    return None


def _values(spec: Mapping[str, Any]) -> list[str]:
    return [str(v.get("value")) for v in spec.get("values") or () if isinstance(v, Mapping)]


def _map_effort(effort: str, spec: Mapping[str, Any], model_id: str) -> str:
    """OpenAI ``effort`` → one of the model's own values: the same word when the model has it,
    else the nearest level (``xhigh`` → ``high``, ``minimal`` → ``low``...)."""
    values = _values(spec)
    if spec.get("inferred") or not values:
        return effort  # values inferred from sibling slugs are incomplete: send the word as is
    by_lower = {v.lower(): v for v in values}
    if effort in by_lower:
        return by_lower[effort]
    ranked = [v for v in values if v.lower() in EFFORT_LEVELS]
    if not ranked:
        raise ConfigurationError(
            f"Model {model_id!r} takes {spec.get('id')} = {', '.join(values)}; reasoning_effort "
            f"{effort!r} does not map to any of them.",
            code="invalid_model",
        )
    want = EFFORT_LEVELS.index(effort)

    def distance(value: str) -> tuple[int, int]:
        # Nearest level; on a tie the weaker one (cheaper, and never more than asked for).
        rank = EFFORT_LEVELS.index(value.lower())
        return abs(rank - want), rank

    return min(ranked, key=distance)


def choose_model(
    name: str, models: Iterable[ModelInfo], *, reasoning_effort: str | None = None
) -> ModelChoice | None:
    """Resolve ``name`` to what ``Run`` accepts (row 14), or ``None`` when the account has no such
    model.

    ``name`` is a family id, an alias, a per-effort sibling slug (``gpt-5.2-high``: the family
    plus its effort parameter, never the slug itself), a legacy ``cursor-`` slug, ``auto``, each
    optionally followed by ``[param=value,...]`` variant parameters from the model list (§9.1).
    ``reasoning_effort`` (OpenAI's names) becomes the model's effort parameter (nearest level);
    explicit ``[...]`` parameters and a sibling slug's level win over it. ``composer-*`` models get
    ``fast=false`` unless the name asks for fast (``[fast=true]`` or ``composer-2-fast``), because a
    bare composer id runs on the Fast lane (row 14).

    ``max_mode`` follows the SDK rule (§5.2): true when every listed variant matching the chosen
    parameters is flagged ``isMaxMode``. Unknown parameters or values raise ``ConfigurationError``
    naming the valid ones."""
    base, params = _split_name(name)
    listed = list(models)
    resolved, implied = _resolve_base(base, listed)
    if resolved is None:
        return None
    info = next((m for m in listed if m.id == resolved), None)
    declared = {str(p.get("id")): p for p in (info.parameters if info else ()) if "id" in p}
    _check_params(resolved, params, declared)
    chosen_keys = {k for k, _ in params}
    params = params + [(k, v) for k, v in implied if k not in chosen_keys]
    chosen_keys |= {k for k, _ in implied}
    if reasoning_effort is not None and resolved != AUTO_MODEL_ID:
        effort = _effort_param(resolved, info, declared, chosen_keys, reasoning_effort)
        if effort is not None:
            params.append(effort)
            chosen_keys.add(effort[0])
    if resolved.lower().startswith("composer") and "fast" not in chosen_keys:
        # Row 14 (OMP #9012, KON): without fast=false a bare composer id runs on the Fast lane.
        params.append(("fast", "false"))
    return ModelChoice(resolved, tuple(params), _max_mode(info, dict(params)))


def _resolve_base(base: str, listed: list[ModelInfo]) -> tuple[str | None, list[tuple[str, str]]]:
    """The catalogue id ``base`` names, with the parameters a sibling or ``-fast`` slug implies."""
    by_id = {m.id.lower(): m for m in listed}
    if base.lower() in by_id:
        return by_id[base.lower()].id, []
    candidates = [base]
    if base.lower().startswith(_LEGACY_PREFIX):
        candidates.append(base[len(_LEGACY_PREFIX) :])
    for cand in candidates:
        if cand.lower() in by_id:
            return by_id[cand.lower()].id, []
        split = _split_sibling(cand)
        if split is not None:
            family = resolve_model(split[0], listed)
            spec = _effort_spec(next((m for m in listed if m.id == family), None))
            if family is not None and spec is not None:
                return family, [(str(spec.get("id")), _map_effort(split[1], spec, family))]
        if cand.lower().endswith("-fast"):
            family = resolve_model(cand[: -len("-fast")], listed)
            if family is not None and family.lower().startswith("composer"):
                return family, [("fast", "true")]
    return resolve_model(base, listed), []


def _check_params(resolved: str, params: list[tuple[str, str]], declared: Mapping[str, Any]) -> None:
    """``ConfigurationError`` naming the valid choices for an unknown parameter or value."""
    for key, value in params:
        spec = declared.get(key)
        if spec is None and key == "fast" and resolved.lower().startswith("composer"):
            continue  # row 14: composer models take `fast` whether or not the catalogue lists it
        if spec is None:
            valid = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(
                f"Model {resolved!r} has no parameter {key!r} (valid: {valid}).", code="invalid_model"
            )
        values = _values(spec)
        if values and not spec.get("inferred") and value not in values:
            raise ConfigurationError(
                f"Parameter {key!r} of model {resolved!r} takes one of: {', '.join(values)}.",
                code="invalid_model",
            )


def _effort_param(
    resolved: str,
    info: ModelInfo | None,
    declared: Mapping[str, Any],
    chosen_keys: set[str],
    reasoning_effort: str,
) -> tuple[str, str] | None:
    """The parameter ``reasoning_effort`` becomes for this model, unless one was chosen already."""
    spec = _effort_spec(info)
    if spec is not None:
        key = str(spec.get("id"))
        return None if key in chosen_keys else (key, _map_effort(reasoning_effort, spec, resolved))
    if "thinking" in declared and "thinking" not in chosen_keys:
        # A model with only a thinking switch (connect.md §9.1 example): effort "none" and
        # "minimal" turn it off, anything else on.
        thinking = "false" if reasoning_effort in ("none", "minimal") else "true"
        if thinking in _values(declared["thinking"]) or not _values(declared["thinking"]):
            return ("thinking", thinking)
        return None
    log.warning(
        "cursorpipe: model %r declares no effort parameter; reasoning_effort=%r is not sent",
        resolved,
        reasoning_effort,
    )
    return None


def _max_mode(info: ModelInfo | None, chosen: Mapping[str, str]) -> bool:
    """§5.2: max mode when every listed variant matching the chosen parameters is flagged."""
    variants = [
        p["variant"] for p in (info.parameters if info else ()) if isinstance(p.get("variant"), Mapping)
    ]
    matching = [
        v
        for v in variants
        if all(
            chosen.get(str(vp.get("id")), str(vp.get("value"))) == str(vp.get("value"))
            for vp in v.get("params") or ()
            if isinstance(vp, Mapping)
        )
    ]
    return bool(matching) and all(bool(v.get("isMaxMode")) for v in matching)
