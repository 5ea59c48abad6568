"""Structured output for the emulator's scripted model: a request that asks for JSON gets JSON.

A real model told "answer with JSON matching this schema" answers with such JSON; the emulator's
default reply must do the same, or ``response_format``, ``with_structured_output`` and
``chat.completions.parse`` could never run offline. :func:`structured_reply` finds the request in
what the model saw (the system texts, where cursorpipe's core puts its instruction, or the user
message), and :func:`schema_instance` builds a deterministic instance of the schema: every declared
property, values taken from the user message where it names them ("Ada Lovelace was 36" gives a
``name`` of "Ada Lovelace" and an ``age`` of 36), placeholders otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["find_schema_request", "schema_instance", "structured_reply"]

# Wording that asks for JSON: the core's own instruction ("validates against this JSON Schema",
# "a single valid JSON object") and the usual phrasings of other clients. Deliberately narrow: the
# tool-emulation prompt ("functions (JSON Schema parameters)") and a prompt that merely mentions
# JSON keep the plain scripted reply.
_SCHEMA_ASK = re.compile(
    r"\b(?:validat|match|conform|adher|follow|fit|according)\w*\s+(?:against\s+|to\s+|with\s+)?"
    r"(?:this|the|the following|that|a|given)?\s*JSON[ _-]?Schema\b",
    re.I,
)
_OBJECT_ASK = re.compile(r"\b(?:respond|reply|answer|output|return)\w*\b[^.\n]{0,40}\bJSON object\b", re.I)
_SCHEMA_KEYS = frozenset(
    {"type", "properties", "$defs", "definitions", "items", "anyOf", "oneOf", "allOf", "$ref", "enum"}
)
_MAX_DEPTH = 6
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PROPER_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b")
_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def find_schema_request(texts: Sequence[str]) -> tuple[bool, Mapping[str, Any] | None]:
    """Whether ``texts`` ask for JSON, and the JSON Schema they carry (``None``: any JSON object).

    The schema is the first JSON object after the words "JSON Schema" that looks like a schema;
    a text that mentions a schema without one still asks for JSON."""
    wants_json = False
    for text in texts:
        match = _SCHEMA_ASK.search(text)
        if match is not None:
            wants_json = True
            schema = _first_schema(text, match.end())
            if schema is not None:
                return True, schema
        elif _OBJECT_ASK.search(text):
            wants_json = True
    return wants_json, None


def _first_schema(text: str, start: int) -> Mapping[str, Any] | None:
    decoder = json.JSONDecoder()
    pos = text.find("{", start)
    while pos >= 0:
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and _SCHEMA_KEYS & value.keys():
            return value
        pos = text.find("{", pos + 1)
    return None


def structured_reply(texts: Sequence[str], user_text: str, plain_reply: str) -> str | None:
    """The JSON answer when ``texts`` ask for JSON, else ``None`` (the plain reply stands).

    Without a schema the answer is ``{"answer": plain_reply}``, a JSON object that still says
    what the model saw."""
    wants_json, schema = find_schema_request(texts)
    if not wants_json:
        return None
    if schema is None:
        return json.dumps({"answer": plain_reply}, ensure_ascii=False)
    return json.dumps(schema_instance(schema, user_text), ensure_ascii=False)


def schema_instance(schema: Mapping[str, Any], text: str = "") -> Any:
    """A deterministic value valid against ``schema`` (objects, arrays, strings, numbers,
    booleans, enums, consts, ``$ref`` into ``$defs``/``definitions``, ``anyOf``/``oneOf``/``allOf``,
    common formats and bounds), filled from ``text`` where a property can be found in it."""
    return _Builder(schema, text).value(schema, "", 0)


class _Builder:
    def __init__(self, root: Mapping[str, Any], text: str) -> None:
        self.root = root
        self.text = text
        self.numbers = [m.group(0) for m in _NUMBER.finditer(text)]
        self.used_numbers = 0
        self.names = [m.group(0) for m in _PROPER_NAME.finditer(text)]

    def resolve(self, schema: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and depth < 20:
            target: Any = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.resolve(merged, depth + 1)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if isinstance(part, Mapping):
                    sub = self.resolve(part, depth + 1)
                    props = {**merged.get("properties", {}), **sub.get("properties", {})}
                    required = [*merged.get("required", []), *sub.get("required", [])]
                    merged = {**sub, **merged}
                    if props:
                        merged["properties"] = props
                    if required:
                        merged["required"] = list(dict.fromkeys(required))
            return merged
        return schema

    def value(self, schema: Any, prop: str, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return None  # ``true``/``{}``-like schemas accept anything; null is the simplest
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.enum(schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # Optional[X] is anyOf [X, null]: answer with X, as a model would.
                chosen = next(
                    (o for o in options if isinstance(o, Mapping) and self.resolve(o).get("type") != "null"),
                    options[0],
                )
                return self.value(chosen, prop, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                return schema.get("default")
        if kind == "object":
            return self.obj(schema, depth)
        if kind == "array":
            return self.array(schema, prop, depth)
        if kind in ("integer", "number"):
            return self.number(schema, prop, integer=kind == "integer")
        if kind == "boolean":
            return schema.get("default", True) if isinstance(schema.get("default"), bool) else True
        if kind == "string":
            return self.string(schema, prop)
        return None

    def informative(self, schema: Any, depth: int = 0) -> bool:
        """Whether ``schema`` constrains a value at all (``{}`` and ``items: {}`` do not)."""
        if not isinstance(schema, Mapping) or depth > 10:
            return False
        schema = self.resolve(schema)
        options = [o for key in ("anyOf", "oneOf") for o in schema.get(key) or ()]
        if options:
            return any(
                self.informative(o, depth + 1)
                for o in options
                if not (isinstance(o, Mapping) and o.get("type") == "null")
            )
        if schema.get("type") == "array" or "items" in schema:
            return self.informative(schema.get("items"), depth + 1)
        return bool(schema.keys() - {"default", "title", "description", "examples"})

    def enum(self, values: list[Any]) -> Any:
        low = self.text.lower()
        for v in values:
            if isinstance(v, str) and v and re.search(rf"\b{re.escape(v.lower())}\b", low):
                return v
        return values[0]

    def obj(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if depth >= _MAX_DEPTH and name not in required:
                continue  # a recursive model stops where nothing more is required
            if (
                name not in required
                and isinstance(sub, Mapping)
                and "default" in sub
                and not self.informative(sub)
            ):
                # An optional property whose schema says nothing (e.g. a recursive reference a
                # client inlined as ``{}``): its default is the one value surely meant.
                out[name] = sub["default"]
                continue
            out[name] = self.value(sub, name, depth + 1)
        for name in sorted(required - out.keys()):
            out[name] = "value"  # required but undeclared: any value is allowed
        return out

    def array(self, schema: Mapping[str, Any], prop: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0) or 0)
        high = schema.get("maxItems")
        # One item at the top levels; nested arrays (a recursive model's children) stay empty.
        count = max(low, 1 if depth <= 2 else 0)
        if isinstance(high, int):
            count = min(count, high)
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            prefix = schema["prefixItems"]
            out = [self.value(s, prop, depth + 1) for s in prefix]
            return out + [self.value(items, prop, depth + 1) for _ in range(max(0, count - len(out)))]
        values = [self.value(items, prop, depth + 1) for _ in range(count)]
        if schema.get("uniqueItems") and len(values) > 1 and all(isinstance(v, int) for v in values):
            values = [v + i for i, v in enumerate(values)]
        return values

    def number(self, schema: Mapping[str, Any], prop: str, *, integer: bool) -> int | float:
        found = self.named_number(prop)
        if found is None and self.used_numbers < len(self.numbers):
            found = self.numbers[self.used_numbers]
            self.used_numbers += 1
        value: float = float(found) if found is not None else float(schema.get("default", 1) or 1)
        lo = schema.get("minimum")
        hi = schema.get("maximum")
        xlo = schema.get("exclusiveMinimum")
        xhi = schema.get("exclusiveMaximum")
        step = 1 if integer else 0.5
        if isinstance(lo, int | float):
            value = max(value, lo)
        if isinstance(xlo, int | float) and value <= xlo:
            value = xlo + step
        if isinstance(hi, int | float):
            value = min(value, hi)
        if isinstance(xhi, int | float) and value >= xhi:
            value = xhi - step
        if integer:
            return int(value)
        return int(value) if value == int(value) and found is not None and "." not in found else value

    def named_number(self, prop: str) -> str | None:
        if not prop:
            return None
        words = re.escape(prop.replace("_", " "))
        match = re.search(rf"\b{words}\b\W{{0,3}}(?:is|of|=|:)?\s*(-?\d+(?:\.\d+)?)", self.text, re.I)
        if match is None:
            return None
        number = match.group(1)
        if number in self.numbers[self.used_numbers :]:
            # consumed here, so the positional fallback moves past it
            index = self.numbers.index(number, self.used_numbers)
            if index == self.used_numbers:
                self.used_numbers += 1
        return number

    def string(self, schema: Mapping[str, Any], prop: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        value = self.named_text(prop)
        if value is None and prop.lower().endswith("name") and self.names:
            value = self.names[0]
        if value is None:
            default = schema.get("default")
            value = default if isinstance(default, str) else f"sample {prop}" if prop else "sample"
        low = int(schema.get("minLength", 0) or 0)
        high = schema.get("maxLength")
        if len(value) < low:
            value = value + "x" * (low - len(value))
        if isinstance(high, int) and len(value) > high:
            value = value[:high]
        return value

    def named_text(self, prop: str) -> str | None:
        """``city: Oslo`` / ``city is Oslo`` / ``city = "Oslo"`` in the user message."""
        if not prop:
            return None
        words = re.escape(prop.replace("_", " "))
        match = re.search(
            rf"\b{words}\b\s*(?::|=|\bis\b)\s*\"?([^\",.;\n]+?)\"?\s*(?:[,.;\n]|$)", self.text, re.I
        )
        return match.group(1).strip() if match else None
