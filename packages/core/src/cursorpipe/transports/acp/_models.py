"""Model ids on ACP: the session's own options, and the CLI ids users know (acp.md §3.2).

``agent acp`` names models with bracket-parameterised ids (``default[]``,
``gpt-5.3-codex[reasoning=medium,fast=false]``, ``claude-opus-4-7[thinking=true,effort=high]``), while
users know the ids of ``agent models``/``--model`` (``auto``, ``gpt-5.3-codex``,
``claude-4.6-sonnet-medium-thinking``). Sending a CLI id to ``set_config_option`` fails with
``-32602 Invalid model value`` on every turn (acp.md §9), so ids must always be taken from the
session's ``configOptions`` / ``models``. How Cursor derives one space from the other is not
documented; the mapping below is our inference from the id shapes quoted in acp.md [G]:

* ``default[...]`` is Auto (CLI id ``auto``);
* the part before ``[`` is the base name; a CLI id may carry the same brackets, or suffixes such
  as ``-thinking``, ``-fast`` and an effort level (``-low``/``-medium``/``-high``/``-xhigh``);
* among several variants of one base, the one with the fewest "extras" (thinking off, medium
  effort, not fast) is what the bare base name means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from ...errors import ModelNotFoundError
from ...types import ModelInfo

__all__ = ["AcpModel", "ModelCatalog", "parse_acp_id"]

_LEVELS = ("minimal", "low", "medium", "high", "xhigh", "max")
_LEVEL_KEYS = ("reasoning", "effort", "thought_level")
_AUTO_BASES = ("default", "auto")


def parse_acp_id(model_id: str) -> tuple[str, dict[str, str]]:
    """``"gpt-5[reasoning=medium,fast=false]"`` → ``("gpt-5", {"reasoning": "medium", "fast": "false"})``.

    Ids without brackets have no parameters; malformed brackets leave the id as the base.
    """
    if not model_id.endswith("]") or "[" not in model_id:
        return model_id, {}
    base, _, inner = model_id[:-1].partition("[")
    params: dict[str, str] = {}
    for item in inner.split(","):
        key, sep, value = item.partition("=")
        if not key.strip():
            continue
        params[key.strip().lower()] = value.strip().lower() if sep else "true"
    return base, params


def _extras(params: Mapping[str, str]) -> int:
    """How far a variant is from the plain model (lower = more plain)."""
    score = 0
    for key, value in params.items():
        if key in _LEVEL_KEYS:
            score += 0 if value == "medium" else 1
        elif value == "true":
            score += 1
    return score


def _parse_cli_id(name: str) -> tuple[str, dict[str, str]]:
    """A CLI id as base + wanted parameters (brackets and known suffixes)."""
    base, params = parse_acp_id(name.strip().lower())
    changed = True
    while changed:
        changed = False
        for suffix in ("thinking", "fast", *_LEVELS):
            tail = "-" + suffix
            if base.endswith(tail) and len(base) > len(tail):
                base = base[: -len(tail)]
                if suffix in _LEVELS:
                    params.setdefault("_level", suffix)
                else:
                    params.setdefault(suffix, "true")
                changed = True
    return base, params


@dataclass(frozen=True, slots=True)
class AcpModel:
    """One model option of an ACP session."""

    acp_id: str
    name: str
    cli_id: str
    base: str
    params: Mapping[str, str]

    def info(self) -> ModelInfo:
        """As a transport-neutral :class:`ModelInfo` (id = the CLI-style id)."""
        aliases = [self.acp_id]
        if self.base in _AUTO_BASES:
            aliases += ["default", "auto"]
        if self.name and self.name.lower() != self.cli_id.lower():
            aliases.append(self.name)
        thinking = self.params.get("thinking")
        return ModelInfo(
            id=self.cli_id,
            display_name=self.name,
            aliases=tuple(dict.fromkeys(a for a in aliases if a.lower() != self.cli_id.lower())),
            supports_thinking=None if thinking is None else thinking == "true",
            parameters=({"acp_id": self.acp_id, **self.params},),
        )


def _cli_ids(options: list[tuple[str, str]]) -> list[AcpModel]:
    parsed = [(acp_id, name, *parse_acp_id(acp_id)) for acp_id, name in options]
    by_base: dict[str, list[int]] = {}
    for i, (_, _, base, _) in enumerate(parsed):
        by_base.setdefault(base, []).append(i)
    out: list[AcpModel] = []
    for acp_id, name, base, params in parsed:
        group = [parsed[i][3] for i in by_base[base]]
        if base in _AUTO_BASES:
            cli = "auto"
        elif len(group) == 1 or not params:
            cli = base
        else:
            differing = sorted({k for p in group for k in p if any(q.get(k) != p.get(k) for q in group)})
            plainest = min(group, key=_extras)
            if params is plainest:
                cli = base
            else:
                cli = base
                rest = []
                for key in differing:
                    if key == "thinking":
                        if params.get(key) == "true":
                            cli += "-thinking"
                    elif key in params:
                        rest.append(f"{key}={params[key]}")
                if rest:
                    cli += "[" + ",".join(rest) + "]"
        out.append(AcpModel(acp_id=acp_id, name=name, cli_id=cli, base=base, params=params))
    # Two variants could still collide on a derived id; fall back to the ACP id for the later one.
    seen: set[str] = set()
    unique: list[AcpModel] = []
    for model in out:
        if model.cli_id.lower() in seen:
            model = AcpModel(model.acp_id, model.name, model.acp_id, model.base, model.params)
        seen.add(model.cli_id.lower())
        unique.append(model)
    return unique


class ModelCatalog:
    """The model options of an ACP session and the mapping from the ids users type."""

    def __init__(self, options: Iterable[tuple[str, str]], current: str | None = None) -> None:
        #: The raw ``(acp id, name)`` options, so a later session's list can be compared cheaply.
        self.options = tuple((i, n) for i, n in options if i)
        self.models = _cli_ids(list(self.options))
        #: The CLI ids, in order (error messages list them; computed once, not per request).
        self.cli_ids = [m.cli_id for m in self.models]
        self.current = current
        # Every request resolves its model name (twice: fail-fast, then the switch); the answer
        # for a name never changes for one catalogue, so it is memoised (issue 16).
        self._resolved: dict[str, AcpModel] = {}
        #: The ``model`` config option's raw ``options`` list this catalogue was read from, if
        #: any: a later session listing an equal list (compared as parsed, in C) is this
        #: catalogue without reading its options again (see :meth:`lists_same`).
        self.raw: list[Any] | None = None

    @staticmethod
    def _model_option(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
        for opt in result.get("configOptions") or ():
            if _mapping(opt) and (opt.get("id") == "model" or opt.get("category") == "model"):
                return opt
        return None

    @classmethod
    def read(cls, result: Mapping[str, Any]) -> tuple[ModelCatalog, str | None]:
        """A catalogue of a session result, with ``raw`` set, and the result's current model."""
        options, current = cls.read_options(result)
        catalog = cls(options, current)
        opt = cls._model_option(result)
        raw = opt.get("options") if opt is not None else None
        if isinstance(raw, list) and raw and catalog.models:
            catalog.raw = raw
        return catalog, current

    def lists_same(self, result: Mapping[str, Any]) -> tuple[bool, str | None]:
        """Whether ``result``'s model option lists exactly the options of ``raw`` (then this
        catalogue is the result's), and the result's current model id when it does (issue 16:
        every pooled session repeats the same list of some thirty models)."""
        if not self.raw:
            return False, None
        opt = self._model_option(result)
        if opt is None or opt.get("options") != self.raw:
            return False, None
        current = opt.get("currentValue")
        return True, current if isinstance(current, str) else None

    @classmethod
    def from_session(cls, result: Mapping[str, Any], *, previous: ModelCatalog | None = None) -> ModelCatalog:
        """Read the ``model`` config option (stable ACP) or, failing that, ``models`` (Cursor's
        legacy field) of a ``session/new`` result (acp.md §3.1).

        When ``previous`` lists the same options, it is returned instead of a rebuilt catalogue
        (the id mapping is the costly part and every pooled session repeats the same list), with
        ``current`` left to the caller: the catalogue refreshes itself whenever the agent's list
        changes, at the price of one tuple comparison per session.
        """
        options, current = cls.read_options(result)
        if previous is not None and previous.options == options:
            return previous
        return cls(options, current)

    @staticmethod
    def read_options(result: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], str | None]:
        """The ``(acp id, name)`` options of a session result and its current model id."""
        options: list[tuple[str, str]] = []
        current: str | None = None
        for opt in result.get("configOptions") or ():
            if _mapping(opt) and (opt.get("id") == "model" or opt.get("category") == "model"):
                current = opt.get("currentValue") if isinstance(opt.get("currentValue"), str) else None
                for item in opt.get("options") or ():
                    if _mapping(item) and isinstance(item.get("value"), str):
                        options.append((item["value"], str(item.get("name") or item["value"])))
                break
        if not options:
            models = result.get("models")
            if isinstance(models, Mapping):
                raw_current = models.get("currentModelId")
                current = raw_current if isinstance(raw_current, str) else None
                for item in models.get("availableModels") or ():
                    if isinstance(item, Mapping) and isinstance(item.get("modelId"), str):
                        options.append((item["modelId"], str(item.get("name") or item["modelId"])))
        return tuple((i, n) for i, n in options if i), current

    def infos(self) -> list[ModelInfo]:
        """Every option as :class:`ModelInfo`, in the agent's order."""
        return [m.info() for m in self.models]

    def resolve(self, name: str) -> AcpModel:
        """The option a user's model name means; raises :class:`ModelNotFoundError`."""
        hit = self._resolved.get(name)
        if hit is not None:
            return hit
        hit = self._resolve(name)
        if len(self._resolved) < 256:  # names come from callers: keep the memo bounded
            self._resolved[name] = hit
        return hit

    def _resolve(self, name: str) -> AcpModel:
        wanted = name.strip()
        low = wanted.lower()
        for model in self.models:
            if wanted == model.acp_id:
                return model
        for model in self.models:
            if low in (model.cli_id.lower(), model.acp_id.lower(), model.name.lower()):
                return model
        if low in _AUTO_BASES:
            for model in self.models:
                if model.base in _AUTO_BASES:
                    return model
        base, params = _parse_cli_id(low)
        candidates = [m for m in self.models if m.base.lower() == base]
        if candidates:
            return max(candidates, key=lambda m: _score(m.params, params))
        raise ModelNotFoundError(name, [m.cli_id for m in self.models])


def _mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # JSON objects are dicts: the exact type check first, the ABC's slower one only otherwise
    # (every pooled session's result lists some thirty models, issue 16).
    return type(value) is dict or isinstance(value, Mapping)


def _score(have: Mapping[str, str], want: Mapping[str, str]) -> tuple[int, int]:
    hits = 0
    for key, value in want.items():
        if key == "_level":
            levels = [have[k] for k in _LEVEL_KEYS if k in have]
            hits += 2 if value in levels else (-3 if levels else 0)
        elif key in have:
            hits += 2 if have[key] == value else -3
        elif value == "true":
            hits -= 1
    # Unrequested extras count against a variant ("claude-x" means thinking off).
    unrequested = {
        k: v for k, v in have.items() if k not in want and not (k in _LEVEL_KEYS and "_level" in want)
    }
    return hits, -_extras(unrequested)
