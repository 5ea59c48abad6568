"""Structured output (``response_format`` json_object / json_schema) on every transport.

None of Cursor's surfaces offers constrained decoding to a client, so cursorpipe asks for JSON in
the system prompt, extracts the JSON value from the answer (tolerating code fences and prose
around it), validates it against the schema with the ``jsonschema`` library (extra
``cursorpipe[structured]``), repairs once by showing the model its error, and then raises
:class:`~cursorpipe.errors.StructuredOutputError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, StructuredOutputError

__all__ = ["ResponseFormat", "extract_json", "parse_response_format"]


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
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - the dev environment has it
            raise ConfigurationError(
                "Validating json_schema output needs the jsonschema package: "
                "pip install 'cursorpipe[structured]'",
                code="missing_extra",
            ) from exc
        errors = sorted(
            jsonschema.Draft202012Validator(dict(self.schema)).iter_errors(value), key=lambda e: list(e.path)
        )
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
        return ResponseFormat(name=str(spec.get("name") or "response"), schema=dict(spec.get("schema") or {}))
    raise ConfigurationError(
        f"response_format.type must be text, json_object or json_schema (got {kind!r})",
        code="invalid_request",
    )


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (code fences and surrounding prose are ignored)."""
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
