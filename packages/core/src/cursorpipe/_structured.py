"""Structured output (``response_format`` json_object / json_schema) on every transport.

None of Cursor's surfaces offers constrained decoding to a client, so cursorpipe asks for JSON in
the system prompt, extracts the JSON value from the answer (tolerating code fences and prose
around it), validates it against the schema with the ``jsonschema`` library (extra
``cursorpipe[structured]``), repairs once by showing the model its error, and then raises
:class:`~cursorpipe.errors.StructuredOutputError`.

The schema comes from the caller (over the server: from anyone who can reach it), so it is
treated as hostile (issue 12): it is checked against the JSON Schema metaschema up front (a bad
schema is the caller's error, not a crash later), ``$ref`` may only point inside the schema itself
(``#...``: no URL, no file, no fetch of any kind), and ``pattern`` / ``patternProperties`` run on
RE2, whose matching time is linear in the input, so no pattern can freeze the event loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, StructuredOutputError

__all__ = ["ResponseFormat", "check_schema", "extract_json", "parse_response_format"]

#: Keywords whose string value names another schema by URI.
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
#: RE2's memory budget for one compiled pattern: a pattern needing more is refused, not run.
_RE2_MAX_MEM = 8 << 20


def _schema_error(message: str) -> ConfigurationError:
    return ConfigurationError(
        message,
        code="invalid_schema",
        details={"param": "response_format.json_schema.schema"},
    )


def _walk(schema: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every object inside ``schema`` with its JSON pointer, iteratively (a deep schema must give
    a clear error, never a RecursionError)."""
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, Mapping):
            yield where, node
            stack.extend((f"{where}/{k}", v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(node))


@functools.lru_cache(maxsize=512)
def _re2(pattern: str) -> Any:
    """The compiled RE2 pattern; raises ``re2.error`` for constructs RE2 refuses (backreferences,
    lookaround) or patterns over the memory budget."""
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # RE2 otherwise writes every refused pattern to stderr
    options.max_mem = _RE2_MAX_MEM
    return re2.compile(pattern, options)


@functools.cache
def _safe_validator_class() -> Any:
    """Draft 2020-12 with ``pattern`` and ``patternProperties`` on RE2."""
    import jsonschema  # type: ignore[import-untyped]
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _re2(patrn).search(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if _re2(patrn).search(key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        {"pattern": pattern, "patternProperties": pattern_properties},
    )


def _refuse_retrieval(uri: str) -> Any:
    """The ``referencing`` registry's retrieve hook: nothing is ever fetched (issue 12)."""
    raise LookupError(f"cursorpipe never fetches schema references ({uri!r})")


def _validator(schema: Mapping[str, Any]) -> Any:
    from referencing import Registry

    registry = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]  # documented, attrs alias
    return _safe_validator_class()(dict(schema), registry=registry)


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a caller's JSON Schema cursorpipe will not run: invalid against the 2020-12
    metaschema, a ``$ref`` leaving the schema (URL, file or relative name: only ``#...`` is
    resolved, from the schema itself), or a regex RE2 cannot run in linear time. Raises
    :class:`ConfigurationError` (code ``invalid_schema``) naming the offending part."""
    try:
        import jsonschema
        import re2
        from referencing.exceptions import Unresolvable
    except ImportError as exc:  # pragma: no cover - the dev environment has both
        raise ConfigurationError(
            "Validating json_schema output needs jsonschema and google-re2: "
            "pip install 'cursorpipe[structured]'",
            code="missing_extra",
        ) from exc
    try:
        nodes = list(_walk(schema))
        for where, node in nodes:
            for keyword in _REF_KEYWORDS:
                ref = node.get(keyword)
                if isinstance(ref, str) and not ref.startswith("#"):
                    raise _schema_error(
                        f"The schema's {keyword} {ref!r} (at {where or '/'}) points outside the schema; "
                        "only local references ('#/$defs/...') are allowed, nothing is ever fetched."
                    )
            patterns: list[Any] = [node.get("pattern")] if isinstance(node.get("pattern"), str) else []
            if isinstance(node.get("patternProperties"), Mapping):
                patterns += list(node["patternProperties"])
            for patrn in patterns:
                try:
                    _re2(patrn)
                except re2.error as exc:
                    detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
                    raise _schema_error(
                        f"The schema's pattern {patrn!r} (at {where or '/'}) cannot be run in bounded time "
                        f"(RE2: {detail}); backreferences and lookaround are not supported."
                    ) from None
        jsonschema.Draft202012Validator.check_schema(dict(schema))
        if not any("$id" in node for _, node in nodes):
            # Without a nested $id every local reference resolves against the root: a dangling
            # one is the caller's error, reported now rather than after the model has run.
            from referencing import Registry
            from referencing.jsonschema import DRAFT202012

            registry = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
            resolver = registry.with_resource("", DRAFT202012.create_resource(dict(schema))).resolver()
            for where, node in nodes:
                ref = node.get("$ref")
                if isinstance(ref, str):
                    try:
                        resolver.lookup(ref)
                    except Unresolvable:
                        raise _schema_error(
                            f"The schema's $ref {ref!r} (at {where or '/'}) does not resolve in the schema."
                        ) from None
    except ConfigurationError:
        raise
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise _schema_error(
            f"response_format schema is not a valid JSON Schema at {where}: {exc.message}"
        ) from None
    except RecursionError:
        raise _schema_error("response_format schema is nested too deeply to check.") from None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """A normalised ``response_format``: ``schema`` is ``None`` for plain JSON mode."""

    name: str = "response"
    schema: Mapping[str, Any] | None = None

    def instructions(self) -> str:
        """The system-prompt block asking for this format."""
        if self.schema is None:
            return "Respond with a single valid JSON object and nothing else (no prose, no code fences)."
        return (
            "Respond with a single JSON value that validates against this JSON Schema, and nothing else "
            f"(no prose, no code fences). Schema {self.name!r}: {json.dumps(self.schema, ensure_ascii=False)}"
        )

    def validate(self, text: str) -> Any:
        """The parsed value; raises ``StructuredOutputError`` saying what is wrong."""
        value = extract_json(text)
        if self.schema is None:
            if not isinstance(value, dict):
                raise StructuredOutputError("the answer is not a JSON object", raw=text)
            return value
        from referencing.exceptions import Unresolvable

        try:
            errors = sorted(_validator(self.schema).iter_errors(value), key=lambda e: list(e.path))
        except Unresolvable as exc:
            # A local reference that names nothing: check_schema cannot see it, the walk does.
            raise _schema_error(f"The schema has a reference that does not resolve: {exc}") from None
        except RecursionError:
            raise StructuredOutputError("the answer is nested too deeply to validate", raw=text) from None
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            raise StructuredOutputError(
                f"the answer does not match the schema at {where}: {first.message}", raw=text
            )
        return value


def parse_response_format(value: Mapping[str, Any] | None) -> ResponseFormat | None:
    """Normalise an OpenAI-style ``response_format`` (``text`` gives ``None``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError("response_format must be an object", code="invalid_request")
    kind = value.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ResponseFormat()
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping):
            raise ConfigurationError(
                "response_format.json_schema must be an object with a 'schema' object", code="invalid_request"
            )
        schema = dict(spec.get("schema") or {})
        check_schema(schema)
        return ResponseFormat(name=str(spec.get("name") or "response"), schema=schema)
    raise ConfigurationError(
        f"response_format.type must be text, json_object or json_schema (got {kind!r})",
        code="invalid_request",
    )


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences and surrounding prose are ignored)."""
    try:
        return _extract_json(text)
    except RecursionError:
        # One attempt only: retrying at every later bracket of a deeply nested answer is quadratic.
        raise StructuredOutputError("the answer's JSON is nested too deeply to parse", raw=text) from None


def _extract_json(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text, i)[0]
            except ValueError:
                continue
    raise StructuredOutputError("the answer contains no JSON value", raw=text)
