"""Tool binding and structured output helpers for ``ChatCursor`` (issue 7).

``bind_tools`` hands OpenAI-style tool dicts to ``CursorClient.events`` (the core sends them on the
transport's tool channel, or emulates one). Structured output has three routes: ``json_schema``
goes through the core's ``response_format`` (validated against the schema, one repair round, then
``cursorpipe.StructuredOutputError``), ``function_calling`` forces a tool whose parameters are the
schema, and ``json_mode`` asks for any JSON object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from cursorpipe import StructuredOutputError
from cursorpipe.integration import extract_json
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

__all__ = [
    "StructuredMethod",
    "is_pydantic_schema",
    "response_format_for",
    "structured_parser",
]

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]


def is_pydantic_schema(schema: Any) -> bool:
    """True for a pydantic (v2 or v1) model class."""
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def response_format_for(
    schema: Mapping[str, Any] | type, *, strict: bool | None
) -> tuple[str, dict[str, Any]]:
    """The tool name of ``schema`` and the ``response_format`` (json_schema) asking for it."""
    function = convert_to_openai_tool(schema)["function"]
    spec: dict[str, Any] = {
        "name": function["name"],
        "schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    if strict is not None:
        spec["strict"] = strict
    return function["name"], {"type": "json_schema", "json_schema": spec}


def structured_parser(schema: Mapping[str, Any] | type | None) -> Any:
    """A function turning the model's message into the structured value.

    It takes the value the core validated (``additional_kwargs["parsed"]``) and otherwise parses
    the text; a pydantic ``schema`` gives an instance of it. A failure raises
    ``cursorpipe.StructuredOutputError`` (``raw`` = the model's answer).
    """

    def parse(message: BaseMessage) -> Any:
        if not isinstance(message, AIMessage):
            raise StructuredOutputError(f"expected an AI message, got {type(message).__name__}")
        text = message.text
        error = message.additional_kwargs.get("structured_output_error")
        if error:
            raise StructuredOutputError(str(error), raw=text)
        if message.additional_kwargs.get("parsed") is not None:
            value = message.additional_kwargs["parsed"]
        else:
            value = extract_json(text)
        if schema is not None and is_pydantic_schema(schema):
            assert isinstance(schema, type)
            try:
                validate = getattr(schema, "model_validate", None) or getattr(schema, "parse_obj")  # noqa: B009 - pydantic.v1 models have only parse_obj
                return validate(value)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise StructuredOutputError(
                    f"the answer does not fit {schema.__name__}: {exc}", raw=text
                ) from exc
        return value

    return parse
