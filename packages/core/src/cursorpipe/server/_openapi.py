"""OpenAPI declarations of the request bodies the routes read themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["MESSAGE_SCHEMA", "json_body"]

MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    },
    "required": ["role"],
}


def json_body(model: type[BaseModel], **items: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` (a real request model of ``_requests``) as the JSON
    request body, so property-based testing of the OpenAPI schema reaches the bodies. The routes
    read the body themselves (inside the concurrency gate, under the size limit), so FastAPI does
    not validate it; ``items`` gives array properties a useful item schema."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema = inline(schema)
    for name, item in items.items():
        schema["properties"][name]["items"] = item
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
